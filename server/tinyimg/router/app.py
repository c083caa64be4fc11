"""The router app: ``create_router_app(settings, discovery)``. No import-time side effects, and no
torch or diffusers anywhere below this module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyimg.errors import build_error_response, status_code_name
from tinyimg.logs import request_id_var
from tinyimg.router.aggregate import build_health_view, build_models_view, build_status_view
from tinyimg.router.auth import RateLimiter, match_key, parse_bearer
from tinyimg.router.errors import RouterError, build_router_error_response
from tinyimg.router.forward import Forwarder, build_upstream_headers
from tinyimg.router.metrics import RouterMetrics, build_router_metrics
from tinyimg.router.poller import poll_all, run_poller
from tinyimg.router.settings import RouterSettings
from tinyimg.router.table import BackendTable

GENERATION_PATHS = ("/generate", "/v1/images/generations")


class RequestIdMiddleware:
    """Takes X-Request-ID from the request (or makes one), exposes it to logs and error bodies, and
    puts it on every response. Plain ASGI: it sits on the hot path of every forwarded request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        request_id = given[:128] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class RouterState:
    """Everything the routes share, on ``app.state.router``."""

    def __init__(self, settings: RouterSettings, discovery: Any):
        self.settings, self.discovery = settings, discovery
        self.table = BackendTable()
        self.metrics: RouterMetrics = build_router_metrics()
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None
        self.started = time.monotonic()
        self.client: httpx.AsyncClient | None = None
        self.forwarder: Forwarder | None = None


# Dependencies are async on purpose: FastAPI runs a sync one in a worker thread, per request.
async def get_state(request: Request) -> RouterState:
    return request.app.state.router


StateDep = Annotated[RouterState, Depends(get_state)]


async def check_access(request: Request, state: StateDep) -> None:
    """API key (when keys are configured) and rate limit, except on the open paths."""
    settings = state.settings
    if request.url.path in settings.open_paths:
        return
    who = request.client.host if request.client else "unknown"
    if settings.key_hashes:
        matched = match_key(parse_bearer(request.headers.get("authorization")), list(settings.key_hashes))
        if matched is None:
            state.metrics.rejected.labels("auth").inc()
            raise RouterError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)")
        who = matched
    if state.limiter is not None:
        wait = state.limiter.take(who, time.monotonic())
        if wait > 0:
            state.metrics.rejected.labels("rate_limit").inc()
            raise RouterError(429, "rate_limited", "rate limit exceeded for this key", retry_after=wait)


def build_http_client(settings: RouterSettings) -> httpx.AsyncClient:
    """The one pooled client for forwarding and polling."""
    timeout = httpx.Timeout(settings.upstream_timeout, connect=settings.connect_timeout, pool=settings.connect_timeout)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


async def read_generation_body(request: Request, settings: RouterSettings, known: list[str]) -> tuple[bytes, str]:
    """The raw body (forwarded unchanged) and the model it names. With one known model and no
    ``model`` field, that model is meant (the backend then decides whether the body is valid)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise RouterError(413, "request_too_large", f"request body over {settings.max_body_bytes} bytes")
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        raise RouterError(413, "request_too_large", f"request body over {settings.max_body_bytes} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise RouterError(422, "invalid_request", "body: not valid JSON") from None
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, str) and model:
        return body, model
    if len(known) == 1:
        return body, known[0]
    raise RouterError(422, "invalid_request", "model: field required (the router serves several models)")


async def fetch_pod_statuses(client: httpx.AsyncClient, urls: list[str], timeout: float) -> dict[str, Any]:
    async def fetch(url: str) -> dict[str, Any] | str:
        try:
            response = await client.get(url + "/status", timeout=timeout)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__

    results = await asyncio.gather(*(fetch(u) for u in urls))
    return dict(zip(urls, results, strict=True))


def add_routes(app: FastAPI) -> None:
    guarded = [Depends(check_access)]

    async def generate(request: Request, state: StateDep) -> Any:
        body, model = await read_generation_body(request, state.settings, list(state.table.models))
        request_id = request.scope["state"]["request_id"]
        headers = build_upstream_headers(
            [(k, v) for k, v in request.headers.items()], request_id, request.client.host if request.client else None
        )
        return await state.forwarder.forward(model, request.url.path, body, headers, request_id)

    for path in GENERATION_PATHS:
        app.add_api_route(path, generate, methods=["POST"], dependencies=guarded, response_model=None)

    @app.get("/models", dependencies=guarded)
    async def models(state: StateDep) -> dict[str, Any]:
        return build_models_view(state.table)

    @app.get("/status", dependencies=guarded)
    async def status(state: StateDep) -> dict[str, Any]:
        urls = sorted(state.table.pods)
        results = await fetch_pod_statuses(state.client, urls, state.settings.status_timeout)
        router = {
            "mode": state.discovery.mode,
            "uptime_seconds": round(time.monotonic() - state.started, 3),
            "in_flight": sum(p.inflight for p in state.table.pods.values()),
        }
        return build_status_view(state.table, results, router)

    @app.get("/health", dependencies=guarded)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", dependencies=guarded)
    async def ready(state: StateDep) -> JSONResponse:
        view = build_health_view(state.table, state.discovery.mode)
        return JSONResponse(view, status_code=200 if state.table.synced else 503)

    @app.get("/metrics", dependencies=guarded)
    async def metrics(state: StateDep) -> Response:
        gauge = state.metrics.ready_pods
        gauge.clear()
        for name in state.table.models:
            gauge.labels(name).set(len(state.table.ready_pods(name)))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def install_error_handlers(app: FastAPI) -> None:
    async def router_error(request: Request, exc: RouterError) -> JSONResponse:
        response = build_router_error_response(exc)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return build_error_response(exc.status_code, status_code_name(exc.status_code), str(exc.detail))

    app.add_exception_handler(RouterError, router_error)
    app.add_exception_handler(HTTPException, http_error)


def create_router_app(settings: RouterSettings, discovery: Any) -> FastAPI:
    """``discovery`` fills the table: ``StaticDiscovery`` or ``KubeDiscovery`` (``start(table)``,
    ``stop()``, ``mode``)."""
    state = RouterState(settings, discovery)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.client = build_http_client(settings)
        state.forwarder = Forwarder(state.client, state.table, state.metrics, settings.retry_after)
        await discovery.start(state.table)
        # One round before serving: the first requests then already know which backends answer.
        await poll_all(state.client, state.table, settings.poll_timeout)
        poller = asyncio.create_task(run_poller(state.client, state.table, settings.poll_interval, settings.poll_timeout))
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await discovery.stop()
            await state.client.aclose()

    app = FastAPI(title="tinyimg router", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.router = state
    install_error_handlers(app)
    add_routes(app)
    app.add_middleware(RequestIdMiddleware)
    return app
