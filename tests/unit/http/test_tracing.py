"""The edge's server span (tinyimg.http.tracing) on an app built with tracing on, and /metrics in
the format the scraper asks for (tinyimg.http.metrics). Requests go through httpx's ASGI transport."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, Histogram

from tests.support.otlp import recorded_spans  # noqa: F401  (the fixture)
from tinyimg.core.tracing import build_exemplar, span
from tinyimg.http.edge import install_edge
from tinyimg.http.limits import EdgeLimits
from tinyimg.http.metrics import render_metrics
from tinyimg.http.tracing import FASTAPI_TELEMETRY

CALLER = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"


def build_app() -> FastAPI:
    app = FastAPI(telemetry=FASTAPI_TELEMETRY)

    @app.get("/v1/jobs/{job_id}")
    def read_job(job_id: str) -> dict:
        return {"id": job_id}

    @app.post("/generate")
    async def generate() -> dict:
        return {}

    @app.get("/health/ready")
    def ready() -> dict:
        return {}

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("boom")

    install_edge(app, EdgeLimits(max_body_bytes=10))
    return app


async def call(app: FastAPI, method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://test") as client:
        return await client.request(method, path, **kwargs)


async def test_each_request_is_one_server_span_named_by_its_route_under_the_callers_traceparent(recorded_spans):
    app = build_app()
    answer = await call(app, "GET", "/v1/jobs/job_123", headers={"traceparent": CALLER, "x-request-id": "req-1"})
    assert answer.status_code == 200
    [server] = recorded_spans.get_finished_spans()
    assert server.name == "GET /v1/jobs/{job_id}" and server.kind == SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == "c" * 32 and server.parent.span_id == int("d" * 16, 16)
    assert server.attributes["http.response.status_code"] == 200 and server.attributes["tinyimg.request_id"] == "req-1"


async def test_refusals_of_the_edge_and_errors_have_spans_and_probes_have_none(recorded_spans):
    app = build_app()
    assert (await call(app, "POST", "/generate", content=b"x" * 100)).status_code == 413
    assert (await call(app, "GET", "/boom")).status_code == 500
    assert (await call(app, "GET", "/health/ready")).status_code == 200
    assert (await call(app, "GET", "/nowhere")).status_code == 404
    spans = [(s.name, s.attributes["http.response.status_code"], s.status.status_code) for s in recorded_spans.get_finished_spans()]
    # refused on its head, before routing: named by its method alone
    assert spans == [("POST", 413, StatusCode.UNSET), ("GET /boom", 500, StatusCode.ERROR), ("GET", 404, StatusCode.UNSET)]


def test_an_app_built_with_tracing_off_has_no_tracing_middleware():
    app = build_app()
    assert "TracingMiddleware" not in [m.cls.__name__ for m in app.user_middleware]


@pytest.mark.parametrize("accept, content_type, has_exemplar", [
    (None, "text/plain; version=0.0.4", False),
    ("text/plain", "text/plain; version=0.0.4", False),
    ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text; version=1.0.0", True),
])
def test_metrics_come_in_the_format_asked_for_and_only_openmetrics_carries_exemplars(recorded_spans, accept, content_type,
                                                                                     has_exemplar):
    registry = CollectorRegistry()
    latency = Histogram("x_seconds", "x", registry=registry, buckets=(1.0,))
    with span("request"):
        exemplar = build_exemplar()
        latency.observe(0.5, exemplar)
    response = render_metrics(registry, accept)
    assert response.headers["content-type"].startswith(content_type)
    body = response.body.decode()
    assert (f'trace_id="{exemplar["trace_id"]}"' in body) is has_exemplar
    assert 'x_seconds_bucket{le="1.0"} 1' in body


@pytest.mark.parametrize("junk", [b"00-zz-yy-01", b"x" * 4000, b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01",
                                  b"\xff\xfe traceparent \xc3\x28", b""])
async def test_a_malformed_traceparent_starts_a_new_trace_and_the_request_is_served(recorded_spans, junk):
    app = build_app()
    answer = await call(app, "GET", "/v1/jobs/j1", headers=[(b"traceparent", junk), (b"tracestate", junk)])
    assert answer.status_code == 200
    [server] = recorded_spans.get_finished_spans()
    assert server.parent is None and server.context.trace_id != 0
