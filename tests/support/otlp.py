"""A real OTLP/HTTP trace receiver on loopback, for tests: it takes what the OpenTelemetry SDK's
exporter POSTs to ``/v1/traces`` (protobuf ``ExportTraceServiceRequest``, gzip or not), decodes it
with the ``opentelemetry-proto`` messages and keeps each span as a plain ``ReceivedSpan``.

``otlp_env(receiver)`` is the environment a process needs to export to it (OTEL_* only, as in
production; a short batch delay so spans arrive within a test's patience)."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    events: list[tuple[str, dict[str, Any]]]
    status_code: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any] = field(default_factory=dict)


def read_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [read_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def read_attributes(attributes: Any) -> dict[str, Any]:
    return {a.key: read_value(a.value) for a in attributes}


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = read_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(ReceivedSpan(
                    service=str(resource.get("service.name", "")), name=s.name, trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(), parent_id=s.parent_span_id.hex(), kind=s.kind,
                    start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                    attributes=read_attributes(s.attributes),
                    links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                    events=[(e.name, read_attributes(e.attributes)) for e in s.events],
                    status_code=s.status.code, resource=resource,
                ))
    return spans


class Receiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.url = ""

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self.lock:
            self.spans.extend(spans)
            self.requests += 1

    def snapshot(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def wait_for(self, check: Callable[[list[ReceivedSpan]], Any], timeout: float = 20.0) -> Any:
        """Polls until ``check(spans)`` is truthy; returns its value (AssertionError at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = check(self.snapshot())
            if found:
                return found
            if time.monotonic() > deadline:
                names = sorted({(s.service, s.name) for s in self.snapshot()})
                raise AssertionError(f"spans never matched within {timeout}s; received {names}")
            time.sleep(0.1)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.snapshot() if s.trace_id == trace_id]


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            receiver.add(decode_spans(body))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def otlp_env(receiver: Receiver, service: str | None = None) -> dict[str, str]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    if service:
        env["OTEL_SERVICE_NAME"] = service
    return env


_MEMORY: list[Any] = []  # the in-memory exporter, once a test asked for it (one global provider per process)


@pytest.fixture
def recorded_spans() -> Iterator[Any]:
    """Tracing on in this process for one test, its finished spans in an ``InMemorySpanExporter``
    (the SDK's own). OpenTelemetry allows one global tracer provider per process: it is installed
    at the first use and stays, and tracing is switched off again after each test."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tinyimg.core.tracing import set_tracing_on

    if not _MEMORY:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _MEMORY.append(exporter)
    exporter = _MEMORY[0]
    exporter.clear()
    set_tracing_on(True)
    try:
        yield exporter
    finally:
        set_tracing_on(False)
        exporter.clear()
