"""Which jobs of a batch get a preview and when (tinyimg.runtime.previews), on a fake clock, with a
stand-in renderer (the real one is the pipeline's; see the family contract suite)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest
from PIL import Image

from tinyimg.runtime.previews import PreviewReporter, build_preview_event, build_preview_slots, due_slots


@dataclass
class Params:
    seeds: tuple[int, ...]


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class Job:
    """What the reporter reads of the worker's Job: its seeds and whether its future is done."""

    params: Params
    future: asyncio.Future


@pytest.fixture
def jobs():
    loop = asyncio.new_event_loop()
    yield lambda images: Job(Params(tuple(range(images))), loop.create_future())
    loop.close()


def test_slots_place_each_wanting_job_at_its_images_in_the_batch(jobs):
    batch = [jobs(2), jobs(1), jobs(3)]
    slots = build_preview_slots(batch, [None, 0.5, 1.0], now=7.0)
    assert [(s.job, s.start, s.count, s.interval, s.last) for s in slots] == [
        (batch[1], 2, 1, 0.5, 7.0), (batch[2], 3, 3, 1.0, 7.0)]
    assert build_preview_slots(batch, [None, None, None], now=7.0) == []


def test_a_slot_is_due_once_its_interval_has_passed_and_never_at_the_last_step(jobs):
    fast, slow = build_preview_slots([jobs(1), jobs(1)], [0.0, 1.0], now=0.0)
    assert due_slots([fast, slow], step=1, total=10, now=0.5) == [fast]
    assert due_slots([fast, slow], step=2, total=10, now=1.0) == [fast, slow]
    assert due_slots([fast, slow], step=10, total=10, now=5.0) == []


def test_the_reporter_renders_only_due_jobs_and_delivers_their_event(jobs):
    clock = Clock()
    mine, other = jobs(2), jobs(1)
    slots = build_preview_slots([other, mine], [None, 1.0], now=clock())
    delivered, rendered = [], []

    def render(start: int, count: int):
        rendered.append((start, count))
        return [Image.new("RGB", (8, 6), (10 * i, 0, 0)) for i in range(count)]

    reporter = PreviewReporter(slots, lambda job, data: delivered.append((job, data)), "m", clock)
    for step, now in ((1, 10.4), (2, 11.0), (3, 11.5), (4, 12.2), (5, 20.0)):
        clock.now = now
        reporter.on_latents(step, 5, render)
    # Due at 11.0 (1 s after the start) and 12.2 (1.2 s after that); 11.5 too early; step 5 is the last.
    assert rendered == [(1, 2), (1, 2)]
    assert [(job, data["step"], data["total_steps"], data["width"], data["height"], len(data["images"]))
            for job, data in delivered] == [(mine, 2, 5, 8, 6, 2), (mine, 4, 5, 8, 6, 2)]


def test_a_finished_or_cancelled_job_gets_no_preview_rendered(jobs):
    job = jobs(1)
    job.future.cancel()
    rendered = []
    reporter = PreviewReporter(build_preview_slots([job], [0.0], 0.0), lambda *_: None, "m", Clock())
    reporter.on_latents(1, 4, lambda start, count: rendered.append(start) or [])
    assert rendered == []


def test_a_failing_preview_is_logged_once_and_stops_previews_but_never_raises(jobs, caplog):
    calls = []

    def broken(start: int, count: int):
        calls.append(start)
        raise RuntimeError("no map")

    reporter = PreviewReporter(build_preview_slots([jobs(1)], [0.0], 0.0), lambda *_: None, "tiny", Clock())
    with caplog.at_level(logging.ERROR, logger="tinyimg.engine"):
        for step in (1, 2, 3):
            reporter.on_latents(step, 10, broken)
    assert calls == [0] and reporter.failed
    assert [r.getMessage() for r in caplog.records] == ["preview failed; no more previews for this batch"]


def test_the_event_carries_one_data_url_per_image():
    data = build_preview_event(3, 8, [Image.new("RGB", (5, 4)), Image.new("RGB", (5, 4))])
    assert (data["step"], data["total_steps"], data["width"], data["height"]) == (3, 8, 5, 4)
    assert len(data["images"]) == 2 and all(u.startswith("data:image/jpeg;base64,") for u in data["images"])
