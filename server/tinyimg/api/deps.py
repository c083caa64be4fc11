"""What the route modules share (they never import one another): named dependencies, so route
signatures read as what they use; the API-key check of the generation routes (probes, metrics and
listings stay open); and how a waiting route hears that its client hung up.

Key files are read and matched by the same pure functions the router uses (``tinyimg.core.auth``:
sha256 hashes only, every stored hash compared in constant time), so both answer the same keys the
same way. Failed attempts are limited per client address (429 past the limit), so keys cannot be
guessed fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import Depends, Request

from tinyimg.api.metrics import ServerMetrics
from tinyimg.core.auth import KeyFileError, RateLimiter, hash_bearer, match_key, parse_bearer
from tinyimg.core.errors import ApiError
from tinyimg.core.tenants import DEFAULT_TENANT, Tenant, TenantTable, load_tenants, read_tenant_header
from tinyimg.durable.reader import DurableJobs
from tinyimg.runtime.jobrunner import JobsApi
from tinyimg.runtime.jobs import EngineApi
from tinyimg.spec import ConfigError, ServerConfig
from tinyimg.wire.contract import BODY_ERRORS, EDGE_ERRORS, build_error_responses

UNAUTHORIZED = "a valid API key is required: Authorization: Bearer <key>"
# What a generation route can answer besides 200: the edge's, the body's, auth, the engine's.
GENERATION_ERRORS = build_error_responses(*BODY_ERRORS, 401, 404, 409, 429, 499, 503, 504, *EDGE_ERRORS)


def get_config(request: Request) -> ServerConfig:
    return cast(ServerConfig, request.app.state.config)


def get_engine(request: Request) -> EngineApi:
    return cast(EngineApi, request.app.state.engine)


def get_metrics(request: Request) -> ServerMetrics:
    return cast(ServerMetrics, request.app.state.metrics)


def get_jobs(request: Request) -> JobsApi:
    return cast(JobsApi, request.app.state.jobs)


def get_durable(request: Request) -> DurableJobs:
    return cast(DurableJobs, request.app.state.durable)


def load_api_keys(path: str | Path) -> TenantTable:
    """The keys file's tenants (one key per line: each key its own tenant)."""
    try:
        return load_tenants(path)
    except KeyFileError as err:
        raise ConfigError(str(err)) from None


def read_tenant(request: Request) -> Tenant:
    """Whose request it is: the tenant of its key (this server's keys file), else the one a router
    named in its signed tenant header, else ``default``."""
    tenants: TenantTable | None = request.app.state.tenants
    if tenants is not None:
        return tenants.match(parse_bearer(request.headers.get("authorization"))) or DEFAULT_TENANT
    return read_tenant_header(request.headers, request.app.state.router_secret) or DEFAULT_TENANT


def read_tenancy(request: Request) -> dict[str, Any]:
    """A ``JobOrder``'s tenant, and whether its budget is counted here: for a tenant of this
    server's own keys file (a router counts the budgets of the tenants it names)."""
    return {"tenant": read_tenant(request), "charge": request.app.state.tenants is not None}


def is_authenticated(request: Request) -> bool:
    """True when keys are configured and the request carries one of them."""
    hashes: list[str] | None = request.app.state.api_keys
    return hashes is not None and match_key(parse_bearer(request.headers.get("authorization")), hashes) is not None


def read_key_hash(request: Request) -> str | None:
    """The hash of the request's API key when keys are on (a job then answers only that key)."""
    if request.app.state.api_keys is None:
        return None
    return hash_bearer(request.headers.get("authorization"))


def require_api_key(request: Request) -> None:
    if request.app.state.api_keys is None or is_authenticated(request):
        return
    limiter: RateLimiter = request.app.state.auth_failures
    wait = limiter.take(request.client.host if request.client else "unknown", time.monotonic())
    if wait > 0:
        raise ApiError("too many failed API key attempts from this address", 429, "rate_limited", wait)
    raise ApiError(UNAUTHORIZED, 401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


async def read_disconnect(request: Request) -> None:
    """Returns when the client hangs up (``JobService.finish`` cancels its job then). The route has
    read the whole body by now, so servers send nothing more until the connection closes (or our
    response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


ConfigDep = Annotated[ServerConfig, Depends(get_config)]
EngineDep = Annotated[EngineApi, Depends(get_engine)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]
JobsDep = Annotated[JobsApi, Depends(get_jobs)]
DurableDep = Annotated[DurableJobs, Depends(get_durable)]
ApiKeyDep = Annotated[None, Depends(require_api_key)]
