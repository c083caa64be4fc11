"""The spans of one pipeline call (a batch), built after it from times measured during it.

During the call the device thread only appends ``time.time_ns()`` readings to a ``BatchTimeline``
(the handler's ``on_phase`` marks and each step); nothing touches OpenTelemetry there. Afterwards,
on the event loop, ``record_batch_spans`` makes, for each request of the batch, a ``queue`` span
(its wait, from submission to the batch's start) under the request's own span; one ``pipeline``
span under the first request's, linked to every other member's; inside it ``load_adapters`` (when
the batch names run-time adapters), ``encode_prompt``, ``denoise`` (one event per step) and
``vae_decode``; and, in every other member's trace, a ``batch`` span linked to that pipeline span.
Attributes: model, device, revision, tenant, sizes, steps, batch size; never prompts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from tinyimg.core.tracing import link_context, link_to, record_span, set_span_in_context, wall_ns

if TYPE_CHECKING:
    from tinyimg.runtime.jobs import Job

PREPARED, ENCODED = "prepared", "encoded"


@dataclass
class BatchTimeline:
    """Wall-clock readings of one pipeline call, appended on the device thread."""

    started_ns: int = field(default_factory=time.time_ns)
    marks: dict[str, int] = field(default_factory=dict)
    steps: list[tuple[int, int, int]] = field(default_factory=list)  # (step, total, ns)

    def mark(self, phase: str) -> None:
        self.marks[phase] = time.time_ns()

    def step(self, step: int, total: int) -> None:
        self.steps.append((step, total, time.time_ns()))


def build_batch_attributes(batch: Sequence[Job], device: str) -> dict[str, Any]:
    head = batch[0].params
    attributes: dict[str, Any] = {
        "tinyimg.model": batch[0].model, "tinyimg.device": device,
        "tinyimg.batch.requests": len(batch), "tinyimg.batch.images": sum(len(j.params.seeds) for j in batch),
        "tinyimg.width": head.width, "tinyimg.height": head.height, "tinyimg.steps": head.steps,
        "tinyimg.mode": head.mode,
    }
    revision = os.environ.get("TINYIMG_REVISION")
    if revision:
        attributes["tinyimg.revision"] = revision
    return attributes


def build_phases(timeline: BatchTimeline, ended_ns: int) -> list[tuple[str, int, int]]:
    """(name, start, end) of the call's phases that it reached. Pure."""
    marks, phases = timeline.marks, []
    start = timeline.started_ns
    if PREPARED in marks:
        if marks[PREPARED] - start > 0:
            phases.append(("load_adapters", start, marks[PREPARED]))
        start = marks[PREPARED]
    if ENCODED not in marks:
        return phases
    phases.append(("encode_prompt", start, marks[ENCODED]))
    last_step = timeline.steps[-1][2] if timeline.steps else marks[ENCODED]
    phases.append(("denoise", marks[ENCODED], last_step))
    if timeline.steps:
        phases.append(("vae_decode", last_step, ended_ns))
    return phases


def record_batch_spans(batch: Sequence[Job], timeline: BatchTimeline, device: str, error: str | None = None,
                       ended_ns: int | None = None) -> Span | None:
    """The spans of a finished pipeline call (see the module's doc); its ``pipeline`` span, or None
    when no request of the batch is traced."""
    traced = [job for job in batch if job.trace is not None]
    if not traced:
        return None
    ended_ns = ended_ns or time.time_ns()
    started = timeline.started_ns
    for job in traced:
        if job.queue_traced:  # a failed batch run again one request at a time: its wait was recorded
            continue
        job.queue_traced = True
        attributes = {"tinyimg.model": job.model, "tinyimg.tenant": job.tenant.name, "tinyimg.images": len(job.params.seeds)}
        record_span("queue", job.trace, min(wall_ns(job.enqueued_at), started), started, attributes)
    attributes = build_batch_attributes(batch, device)
    links = [link for link in (link_context(job.trace) for job in traced[1:]) if link is not None]
    pipeline = record_span("pipeline", traced[0].trace, started, ended_ns, attributes, links, error=error)
    inside = set_span_in_context(pipeline)
    for name, start, end in build_phases(timeline, ended_ns):
        events = [("step", at, {"tinyimg.step": step, "tinyimg.total_steps": total})
                  for step, total, at in timeline.steps] if name == "denoise" else []
        record_span(name, inside, start, end, events=events)
    for job in traced[1:]:
        record_span("batch", job.trace, started, ended_ns, {"tinyimg.batch.requests": len(batch)}, [link_to(pipeline)])
    return pipeline
