"""The router's settings: one frozen object built by the CLI (or a test) and handed to the app."""

from __future__ import annotations

from dataclasses import dataclass

OPEN_PATHS_DEFAULT = ("/health", "/health/ready", "/metrics")


@dataclass(frozen=True)
class RouterSettings:
    key_hashes: tuple[str, ...] = ()  # sha256 hex of each API key; empty = no auth
    rate_limit: float | None = None  # requests per second per key (per client address without keys)
    rate_burst: float = 10.0
    open_paths: tuple[str, ...] = OPEN_PATHS_DEFAULT  # reachable without a key
    poll_interval: float = 1.0
    poll_timeout: float = 1.0
    status_timeout: float = 2.0  # per pod, for the aggregated GET /status
    connect_timeout: float = 2.0
    # Waiting for a pod's answer to a generation request: longer than the model server's own
    # default deadline (300 s), so its 504 with a reason reaches the client rather than the router's.
    upstream_timeout: float = 330.0
    retry_after: float = 2.0  # seconds, in 503s the router itself answers
    max_body_bytes: int = 1_000_000
