"""The router's settings: one frozen object built by the CLI (or a test) and handed to the app.
Each default lives here once; the CLI takes them from here, and values that depend on others are
derived (the upstream timeout from the longest request timeout a model may have)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyimg.core.drain import build_upstream_timeout
from tinyimg.core.labels import DEFAULT_PORT
from tinyimg.core.tenants import Tenant, TenantTable
from tinyimg.http.limits import EdgeLimits
from tinyimg.http.streams import StreamLimits
from tinyimg.spec import RuntimeSpec

OPEN_PATHS_DEFAULT = ("/health", "/health/ready", "/metrics")


def read_max_request_timeout() -> float:
    """The longest ``requestTimeoutSeconds`` a model may declare (the schema's own bound)."""
    field = RuntimeSpec.model_fields["request_timeout_seconds"]
    return float(next(m.le for m in field.metadata if getattr(m, "le", None) is not None))


# Waiting for a pod's answer to a generation request: past the longest deadline a model may have,
# so the model's own 504 with a reason reaches the client rather than the router's.
UPSTREAM_TIMEOUT_DEFAULT = build_upstream_timeout(read_max_request_timeout())


@dataclass(frozen=True)
class RouterSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    key_hashes: tuple[str, ...] = ()  # sha256 hex of each API key; empty = no auth
    # The keys file's tenants (tinyimg.core.tenants); empty: each key of key_hashes its own tenant.
    tenants: tuple[Tenant, ...] = ()
    rate_limit: float | None = None  # requests per second per tenant (per client address without keys)
    rate_burst: float = 10.0
    open_paths: tuple[str, ...] = OPEN_PATHS_DEFAULT  # reachable without a key
    poll_interval: float = 1.0
    poll_timeout: float = 1.0
    status_timeout: float = 2.0  # per pod, for the aggregated GET /status and /models
    connect_timeout: float = 2.0
    upstream_timeout: float = UPSTREAM_TIMEOUT_DEFAULT
    retry_after: float = 2.0  # seconds, in 503s the router itself answers
    max_body_bytes: int = EdgeLimits.max_body_bytes
    max_body_bytes_total: int = EdgeLimits.max_body_bytes_total
    max_connections: int = EdgeLimits.max_connections
    # Event streams relayed at once: per job, per API key (per client address without keys), in all.
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For/-Proto are believed; none by default
    # On SIGTERM, open requests get this long, then are cancelled: inside Kubernetes' default 30 s
    # grace period, so the router exits on its own rather than being killed.
    shutdown_timeout: float = 25.0
    # Signs job ids (tinyimg.router.jobids); every replica needs the same one. Empty: a random
    # secret per process, so a job is readable only through the replica that created it.
    job_secret: bytes = b""
    # Shared jobs (tinyimg.durable): with a Redis, jobs are read, streamed and cancelled from it by
    # any replica; the result store (a directory path or s3://bucket/prefix?endpoint=..&region=..)
    # serves /v1/files URLs (directory) or signs image URLs (S3).
    redis_url: str | None = None
    result_store: str | None = None
    url_ttl_seconds: int = 3600
    result_ttl_seconds: float = 3600.0

    def tenant_table(self) -> TenantTable:
        return TenantTable(self.tenants) if self.tenants else TenantTable.from_key_hashes(self.key_hashes)

    def edge_limits(self) -> EdgeLimits:
        return EdgeLimits(max_body_bytes=self.max_body_bytes, max_body_bytes_total=self.max_body_bytes_total,
                          max_connections=self.max_connections)
