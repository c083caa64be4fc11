"""The router app: ``create_router_app(settings, discovery)``. No import-time side effects, and no
torch or diffusers anywhere below this module. Routes live in ``tinyimg.router.routes``, one module
per resource, listed in ``ROUTERS``; the edge (request ids, access log, limits, error shape) is the
model server's own (``tinyimg.http``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from tinyimg import ui
from tinyimg.http.edge import install_edge
from tinyimg.http.tracing import FASTAPI_TELEMETRY
from tinyimg.router.discovery import Discovery
from tinyimg.router.drain import DrainGuard
from tinyimg.router.fastpath import GenerationFastPath
from tinyimg.router.forward import Forwarder, build_forward_pool, build_timeouts
from tinyimg.router.poller import poll_all, run_poller
from tinyimg.router.pool import origin_of
from tinyimg.router.routes import adapters, generate, health, info, jobs, metrics, usage
from tinyimg.router.settings import RouterSettings
from tinyimg.router.state import RouterState

ROUTERS = (
    generate.router, jobs.router, jobs.files_router, info.router, usage.router, adapters.router,
    health.router, metrics.router, ui.router,
)


def build_http_client(settings: RouterSettings) -> httpx.AsyncClient:
    """The pooled client for polling and the aggregated views (forwarding has its own pool)."""
    timeout = httpx.Timeout(settings.upstream_timeout, connect=settings.connect_timeout, pool=settings.connect_timeout)
    # Idle connections go before the pods' own keep-alive timeout (5 s) closes them under us.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=4)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


SWEEP_SECONDS = 2.0


async def run_pool_sweeper(state: RouterState) -> None:
    """Every few seconds, the forwarding pool lets go of connections the pods closed and of pods
    that left the table."""
    assert state.forwarder is not None
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        known = {origin_of(url) for url in state.table.pods}
        await state.forwarder.pool.sweep(known.__contains__)


def create_router_app(settings: RouterSettings, discovery: Discovery) -> FastAPI:
    """``discovery`` fills the table: ``StaticDiscovery`` or ``KubeDiscovery`` (``start(table)``,
    ``stop()``, ``mode``)."""
    state = RouterState(settings, discovery)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.client = build_http_client(settings)
        timeouts = build_timeouts(settings.upstream_timeout, settings.connect_timeout)
        state.forwarder = Forwarder(build_forward_pool(), state.table, state.metrics, settings.retry_after, timeouts)
        await discovery.start(state.table)
        # One round before serving: the first requests then already know which backends answer.
        await poll_all(state.client, state.table, settings.poll_timeout)
        poller = asyncio.create_task(run_poller(state.client, state.table, settings.poll_interval, settings.poll_timeout))
        sweeper = asyncio.create_task(run_pool_sweeper(state))
        try:
            yield
        finally:
            for task in (poller, sweeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await discovery.stop()
            await state.forwarder.aclose()
            await state.client.aclose()
            if state.durable is not None and state.durable.queue is not None:
                await state.durable.queue.close()

    app = FastAPI(title="tinyimg router", lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry=FASTAPI_TELEMETRY)
    app.state.router = state
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(GenerationFastPath, state=state)  # first added: inside the edge (tinyimg.router.fastpath)
    app.add_middleware(DrainGuard, holder=state)  # outside the fast path, inside the edge (tinyimg.router.drain)
    install_edge(app, settings.edge_limits())
    return app
