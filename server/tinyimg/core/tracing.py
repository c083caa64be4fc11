"""Traces (OpenTelemetry), shared by the model server, the router and the operator.

Configured only by the standard ``OTEL_*`` environment variables, and off unless they ask for an
exporter: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set, or
``OTEL_TRACES_EXPORTER`` naming one (``otlp``, ``console``); ``OTEL_TRACES_EXPORTER=none`` or
``OTEL_SDK_DISABLED=true`` keep it off. OTLP goes over HTTP/protobuf (port 4318); the SDK itself
reads the rest (headers, timeout, sampler, batch sizes, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``). W3C ``traceparent``/``tracestate`` carry the context between
processes (the SDK's default propagator; ``OTEL_PROPAGATORS`` may change it).

Off, nothing here is on a request's path: the apps ask ``tracing_on()`` before doing any span work,
so a process without tracing runs exactly as before. The SDK is imported only when tracing is
configured; this module needs the API alone.

Spans made after the fact (a request's wait in the queue, the phases of a pipeline call measured on
the device thread) are built with explicit start and end times by ``record_span``: nothing touches
OpenTelemetry on the device thread while a pipeline runs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace import set_span_in_context as set_span_in_context  # re-exported for the apps
from opentelemetry.trace import use_span as use_span

log = logging.getLogger("tinyimg.tracing")

TRACER_NAME = "tinyimg"
PROPAGATION_HEADERS = frozenset({"traceparent", "tracestate"})
OTLP_PROTOCOLS = ("http/protobuf",)
EXPORTERS = ("otlp", "console")
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_on = False


class TracingConfigError(ValueError):
    """An ``OTEL_*`` setting this process cannot honour (the message names the variable)."""


def tracing_on() -> bool:
    return _on


def set_tracing_on(on: bool) -> None:
    """For ``configure_tracing``, and for tests that install their own tracer provider."""
    global _on
    _on = on


def read_exporters(env: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for ([] = tracing off). Pure."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        exporters = [name.strip() for name in named.split(",") if name.strip()]
    else:
        exporters = ["otlp"] if any(env.get(var, "").strip() for var in _ENDPOINT_VARS) else []
    if exporters == ["none"]:
        return []
    unknown = [name for name in exporters if name not in EXPORTERS]
    if unknown:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: {unknown[0]!r} is not one of {', '.join(EXPORTERS)}, none")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or OTLP_PROTOCOLS[0]).strip()
    if "otlp" in exporters and protocol not in OTLP_PROTOCOLS:
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use http/protobuf (the collector's port 4318)")
    return exporters


def configure_tracing(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the global tracer provider when the environment asks for traces; True when it did.
    ``service_name`` is the default ``service.name`` (``OTEL_SERVICE_NAME`` wins). Raises
    ``TracingConfigError`` for a setting it cannot honour, so a typo is seen at start-up."""
    env = os.environ if env is None else env
    exporters = read_exporters(env)
    if not exporters:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    set_tracing_on(True)
    log.info("tracing on", extra={"exporters": exporters, "service": resource.attributes.get(SERVICE_NAME)})
    return True


def get_tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_context() -> Context | None:
    """The active context to carry across a queue or a thread; None when tracing is off."""
    return otel_context.get_current() if _on else None


def extract_context(headers: Sequence[tuple[bytes, bytes]]) -> Context:
    """The caller's trace context from raw ASGI headers (W3C traceparent/tracestate)."""
    carrier = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers
               if k.decode("latin-1").lower() in PROPAGATION_HEADERS}
    return propagate.extract(carrier)


def extract_dict(headers: Mapping[str, str] | None) -> Context | None:
    """The trace context stored with a queued job (``inject_dict``'s output), or None."""
    if not _on or not headers:
        return None
    return propagate.extract(dict(headers))


def inject_headers(headers: list[tuple[bytes, bytes]], ctx: Context | None = None) -> list[tuple[bytes, bytes]]:
    """``headers`` with the caller's propagation headers replaced by this context's (when tracing
    is on; off, they pass through as they came)."""
    if not _on:
        return headers
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    kept = [(k, v) for k, v in headers if k.lower().decode("latin-1") not in PROPAGATION_HEADERS]
    return kept + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]


def inject_dict(headers: dict[str, str], ctx: Context | None = None) -> dict[str, str]:
    """As ``inject_headers``, for a client that takes a dict (webhooks)."""
    if _on:
        propagate.inject(headers, context=ctx)
    return headers


def read_ids(span: Span | None = None) -> tuple[str, str] | None:
    """(trace id, span id) in hex of ``span`` (the current one by default), when it is recorded."""
    if not _on:
        return None
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def build_exemplar() -> dict[str, str] | None:
    """The current span as a Prometheus exemplar (``trace_id``, ``span_id``), or None."""
    ids = read_ids()
    if ids is None or not trace.get_current_span().get_span_context().trace_flags.sampled:
        return None
    return {"trace_id": ids[0], "span_id": ids[1]}


def wall_ns(monotonic_seconds: float) -> int:
    """A ``time.monotonic()`` reading as wall-clock nanoseconds (span timestamps are wall time)."""
    return time.time_ns() - int((time.monotonic() - monotonic_seconds) * 1e9)


def record_span(name: str, parent: Context | None, start_ns: int, end_ns: int, attributes: Mapping[str, Any] | None = None,
                links: Sequence[Link] = (), events: Sequence[tuple[str, int, Mapping[str, Any]]] = (),
                kind: SpanKind = SpanKind.INTERNAL, error: str | None = None) -> Span:
    """A finished span with the times it really had (measured elsewhere: a queue, a thread)."""
    span = get_tracer().start_span(name, context=parent, kind=kind, attributes=dict(attributes or {}),
                                   links=list(links), start_time=start_ns)
    for event, at, event_attributes in events:
        span.add_event(event, dict(event_attributes), timestamp=at)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)
    return span


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL,
         parent: Context | None = None) -> Iterator[Span | None]:
    """A span around a block when tracing is on (None, and nothing done, when off). An exception
    leaving the block is recorded on it."""
    if not _on:
        yield None
        return
    with get_tracer().start_as_current_span(name, context=parent, kind=kind, attributes=dict(attributes or {})) as current:
        yield current


def link_to(span_: Span) -> Link:
    return Link(span_.get_span_context())


def link_context(ctx: Context | None) -> Link | None:
    """A link to the span active in ``ctx`` (None when it has none)."""
    if ctx is None:
        return None
    span_context = trace.get_current_span(ctx).get_span_context()
    return Link(span_context) if span_context.is_valid else None
