"""The server span of each HTTP request, on both apps, when tracing is on (``tinyimg.core.tracing``).

Outermost, so the request id middleware's access log line and the metrics observer (whose
histograms take the span as their exemplar) run inside it. The caller's W3C ``traceparent`` is the
span's parent. Probes and scrapes (``/health``, ``/metrics``, ``/status``: pollers ask every second)
are not traced. Span names are the route's template (``GET /v1/jobs/{job_id}``), never a raw path
with ids in it. Attributes: method, route, status code, request id and model; never bodies,
prompts or keys.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyimg.core.tracing import extract_context, get_tracer

UNTRACED_PREFIXES = ("/health", "/metrics", "/status")
# FastAPI 0.165 and later trace requests themselves once a tracer provider is set (a server span
# per request, and spans for dependencies, the endpoint and serialization). Off on both apps: the
# edge's span above covers what FastAPI's cannot (the edge's own refusals, the router's fast path,
# probes left out), and a second server span per request would only double the cost. Older
# FastAPI releases take and ignore the argument.
FASTAPI_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}  # FastAPI's TelemetryConfig


def build_span_name(scope: Scope) -> str:
    """``METHOD /route/{template}``; the bare method for a path no route matched (a 404 probe)."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None and scope.get("tinyimg_route") is not None:
        template = scope["tinyimg_route"]
    return f"{scope['method']} {template}" if template else scope["method"]


class TracingMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app
        self.tracer = get_tracer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNTRACED_PREFIXES):
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            scope["method"], context=extract_context(scope["headers"]), kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                span.update_name(build_span_name(scope))
                state = scope.get("state", {})
                span.set_attribute("http.response.status_code", status)
                if state.get("request_id"):
                    span.set_attribute("tinyimg.request_id", state["request_id"])
                if isinstance(state.get("model"), str):
                    span.set_attribute("tinyimg.model", state["model"])
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
