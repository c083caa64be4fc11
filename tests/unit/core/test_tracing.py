"""tinyimg.core.tracing: which OTEL_* settings turn traces on (a table), the clear error for one it
cannot honour, propagation headers in and out, and spans recorded with the times they had."""

from __future__ import annotations

import time

import pytest

from tests.support.otlp import recorded_spans  # noqa: F401  (the fixture)
from tinyimg.core import tracing


@pytest.mark.parametrize("env, exporters", [
    ({}, []),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, []),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ["otlp"]),
])
def test_the_environment_decides_whether_traces_are_exported(env, exporters):
    assert tracing.read_exporters(env) == exporters


@pytest.mark.parametrize("env, variable", [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
])
def test_a_setting_it_cannot_honour_is_refused_naming_the_variable(env, variable):
    with pytest.raises(tracing.TracingConfigError, match=variable):
        tracing.read_exporters(env)
    with pytest.raises(tracing.TracingConfigError):
        tracing.configure_tracing("tinyimg-test", env)


def test_off_nothing_is_configured_and_headers_pass_through_as_they_came():
    assert tracing.configure_tracing("tinyimg-test", {}) is False and not tracing.tracing_on()
    headers = [(b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"), (b"x-other", b"1")]
    assert tracing.inject_headers(headers) == headers
    assert tracing.current_context() is None and tracing.read_ids() is None and tracing.build_exemplar() is None
    assert tracing.inject_dict({"a": "b"}) == {"a": "b"}
    with tracing.span("nothing") as nothing:
        assert nothing is None


def test_on_the_callers_traceparent_is_replaced_by_this_processs_span(recorded_spans):
    caller = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    parent = tracing.extract_context([(b"traceparent", caller.encode()), (b"host", b"x")])
    with tracing.span("work", parent=parent) as current:
        assert current is not None
        out = dict(tracing.inject_headers([(b"traceparent", caller.encode()), (b"x-other", b"1")]))
        trace_id, span_id = tracing.read_ids()
        assert tracing.build_exemplar() == {"trace_id": trace_id, "span_id": span_id}
    assert out[b"x-other"] == b"1"
    assert out[b"traceparent"].decode() == f"00-{'a' * 32}-{span_id}-01"  # same trace, this span as the parent
    [finished] = recorded_spans.get_finished_spans()
    assert finished.parent.span_id == int("b" * 16, 16) and format(finished.context.trace_id, "032x") == "a" * 32


def test_a_span_recorded_afterwards_keeps_its_times_links_and_events(recorded_spans):
    start = time.time_ns() - 5_000_000
    with tracing.span("other") as other:
        pass
    recorded = tracing.record_span("queue", None, start, start + 1_000, {"tinyimg.model": "m"},
                                   links=[tracing.link_to(other)], events=[("step", start + 500, {"tinyimg.step": 1})],
                                   error="boom")
    [_, finished] = recorded_spans.get_finished_spans()
    assert finished is not None and recorded.get_span_context() == finished.context
    assert (finished.start_time, finished.end_time) == (start, start + 1_000)
    assert finished.attributes["tinyimg.model"] == "m" and finished.status.description == "boom"
    assert [link.context.span_id for link in finished.links] == [other.get_span_context().span_id]
    assert [(e.name, e.timestamp) for e in finished.events] == [("step", start + 500)]


def test_wall_time_of_a_monotonic_reading():
    ago = time.monotonic() - 2.0
    assert abs(tracing.wall_ns(ago) - (time.time_ns() - 2_000_000_000)) < 50_000_000
