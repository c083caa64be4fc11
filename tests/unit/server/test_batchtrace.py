"""tinyimg.runtime.batchtrace: the phases of a pipeline call from its readings (pure), and the spans
of a batch: each request's queue wait under its own span, one pipeline span under the first
request's, linked to the others, whose traces link back to it through a batch span."""

from __future__ import annotations

import time

from opentelemetry import trace

from tests.support.otlp import recorded_spans  # noqa: F401  (the fixture)
from tinyimg.core import tracing
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.batchtrace import BatchTimeline, build_phases, record_batch_spans
from tinyimg.runtime.jobs import Job


def test_phases_follow_the_readings_and_stop_where_the_call_did():
    timeline = BatchTimeline(started_ns=100, marks={"prepared": 100, "encoded": 150}, steps=[(1, 2, 200), (2, 2, 260)])
    assert build_phases(timeline, 300) == [("encode_prompt", 100, 150), ("denoise", 150, 260), ("vae_decode", 260, 300)]
    with_adapters = BatchTimeline(started_ns=100, marks={"prepared": 120, "encoded": 150}, steps=[(1, 1, 200)])
    assert build_phases(with_adapters, 210)[0] == ("load_adapters", 100, 120)
    failed_while_encoding = BatchTimeline(started_ns=100, marks={"prepared": 100})
    assert build_phases(failed_while_encoding, 130) == []
    failed_in_the_first_step = BatchTimeline(started_ns=100, marks={"prepared": 100, "encoded": 150})
    assert build_phases(failed_in_the_first_step, 170) == [("encode_prompt", 100, 150), ("denoise", 150, 150)]


def job(trace_context, seeds=(1,)) -> Job:
    params = GenerationParams("a prompt never traced", None, 64, 48, 2, 1.0, seeds, "rid")
    return Job("tiny", params, 30.0, None, enqueued_at=time.monotonic() - 0.2, trace=trace_context)  # type: ignore[arg-type]


def test_a_batch_of_two_traces_one_pipeline_linked_from_both(recorded_spans):
    tracer = tracing.get_tracer()
    first, second = tracer.start_span("POST /generate"), tracer.start_span("POST /generate")
    batch = [job(trace.set_span_in_context(first)), job(trace.set_span_in_context(second), seeds=(1, 2))]
    timeline = BatchTimeline()
    timeline.mark("prepared"), timeline.mark("encoded"), timeline.step(1, 2), timeline.step(2, 2)
    pipeline = record_batch_spans(batch, timeline, "cpu")
    spans = {(s.name, s.context.trace_id): s for s in recorded_spans.get_finished_spans()}
    ids = [first.get_span_context().trace_id, second.get_span_context().trace_id]
    assert pipeline is not None and spans[("pipeline", ids[0])].context == pipeline.get_span_context()
    assert ("pipeline", ids[1]) not in spans
    for trace_id, owner in zip(ids, (first, second), strict=True):
        queue = spans[("queue", trace_id)]
        assert queue.parent.span_id == owner.get_span_context().span_id and queue.end_time == timeline.started_ns
        assert 150_000_000 < queue.end_time - queue.start_time < 2_000_000_000
    assert [link.context for link in spans[("pipeline", ids[0])].links] == [second.get_span_context()]
    assert [link.context for link in spans[("batch", ids[1])].links] == [pipeline.get_span_context()]
    attributes = spans[("pipeline", ids[0])].attributes
    assert (attributes["tinyimg.batch.requests"], attributes["tinyimg.batch.images"], attributes["tinyimg.steps"]) == (2, 3, 2)
    denoise = spans[("denoise", ids[0])]
    assert denoise.parent.span_id == pipeline.get_span_context().span_id
    assert [e.attributes["tinyimg.step"] for e in denoise.events] == [1, 2]
    assert all("a prompt never traced" not in str(s.attributes) for s in spans.values())


def test_a_failed_call_marks_its_pipeline_span_and_an_untraced_batch_records_nothing(recorded_spans):
    timeline = BatchTimeline()
    span = record_batch_spans([job(tracing.current_context())], timeline, "cpu", error="RuntimeError: boom")
    assert span is not None and span.status.description == "RuntimeError: boom"
    recorded_spans.clear()
    assert record_batch_spans([job(None)], BatchTimeline(), "cpu") is None
    assert recorded_spans.get_finished_spans() == ()


def test_a_batch_run_again_one_request_at_a_time_records_its_queue_wait_once(recorded_spans):
    first = job(tracing.current_context())
    record_batch_spans([first], BatchTimeline(), "cpu", error="RuntimeError: a prompt the tokenizer refused")
    record_batch_spans([first], BatchTimeline(), "cpu")  # the retry alone
    names = [s.name for s in recorded_spans.get_finished_spans()]
    assert names.count("queue") == 1 and names.count("pipeline") == 2
