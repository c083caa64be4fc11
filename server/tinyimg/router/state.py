"""What the router's routes share (``app.state.router``), and the access check they depend on."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, cast

import httpx
from fastapi import Depends, Request

from tinyimg.core.auth import RateLimiter, build_auth_failure_limiter, parse_bearer
from tinyimg.core.errors import ApiError
from tinyimg.core.tenants import DEFAULT_TENANT
from tinyimg.durable.reader import DurableJobs, build_quotas
from tinyimg.durable.results import parse_result_store_url
from tinyimg.http.streams import StreamGate
from tinyimg.router.coldstart import WaitingRoom
from tinyimg.router.discovery import Discovery
from tinyimg.router.drain import DrainGuard
from tinyimg.router.forward import Forwarder
from tinyimg.router.metrics import RouterMetrics, build_router_metrics
from tinyimg.router.settings import RouterSettings
from tinyimg.router.table import BackendTable


class RouterState:
    def __init__(self, settings: RouterSettings, discovery: Discovery):
        self.settings, self.discovery = settings, discovery
        self.table = BackendTable()
        self.metrics: RouterMetrics = build_router_metrics()
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None
        self.auth_failures = build_auth_failure_limiter()
        self.started = time.monotonic()
        self.client: httpx.AsyncClient | None = None
        self.forwarder: Forwarder | None = None
        # Scale from zero: a request for a model no pod serves waits while discovery asks for a pod.
        self.waiting_room = WaitingRoom(self.table, self.metrics, discovery.record_demand)
        self.job_secret = settings.job_secret or secrets.token_bytes(32)
        self.streams = StreamGate(settings.stream_limits)
        self.drain_guard: DrainGuard | None = None  # set when the app's middleware is built
        self.durable = build_router_durable(settings)
        self.tenants = settings.tenant_table()
        self.quotas = build_quotas(self.durable)


def build_router_durable(settings: RouterSettings) -> DurableJobs | None:
    """The shared jobs (``--redis-url``) and the pods' result store (``--result-store``), or None."""
    if settings.redis_url is None and settings.result_store is None:
        return None
    results = parse_result_store_url(settings.result_store) if settings.result_store else None
    queue = None
    if settings.redis_url is not None:
        from tinyimg.durable.redisjobs import RedisJobs

        queue = RedisJobs(settings.redis_url, settings.result_ttl_seconds)
    return DurableJobs(queue, results, settings.url_ttl_seconds)


# Dependencies are async on purpose: FastAPI runs a sync one in a worker thread, per request.
async def get_state(request: Request) -> RouterState:
    return cast(RouterState, request.app.state.router)


StateDep = Annotated[RouterState, Depends(get_state)]


def refuse_rate(state: RouterState, reason: str, wait: float, message: str) -> ApiError:
    state.metrics.rejected.labels(reason).inc()
    return ApiError(message, 429, "rate_limited", retry_after=wait)


async def check_access(request: Request, state: StateDep) -> None:
    """API key (when keys are configured) and rate limit, except on the open paths. A failed key
    counts against a per-address limit of its own (and the general one, when set), so a client
    cannot try keys faster than that."""
    settings = state.settings
    if request.url.path in settings.open_paths:
        return
    address = request.client.host if request.client else "unknown"
    who = address
    now = time.monotonic()
    request.scope.setdefault("state", {})["tenant"] = DEFAULT_TENANT
    if state.tenants.by_hash:
        tenant = state.tenants.match(parse_bearer(request.headers.get("authorization")))
        if tenant is None:
            wait = state.auth_failures.take(address, now)
            if wait == 0 and state.limiter is not None:
                wait = state.limiter.take(address, now)
            if wait > 0:
                raise refuse_rate(state, "auth_rate_limit", wait, "too many failed API key attempts from this address")
            state.metrics.rejected.labels("auth").inc()
            raise ApiError(
                "missing or invalid API key (Authorization: Bearer <key>)", 401, "unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
        request.scope["state"]["tenant"] = tenant
        who = tenant.name
    if state.limiter is not None:
        wait = state.limiter.take(who, now)
        if wait > 0:
            raise refuse_rate(state, "rate_limit", wait, "rate limit exceeded for this key")


AccessDep = Depends(check_access)
