"""Which jobs of a running batch get a preview after a denoising step, and making it.

Previews are opt-in per job (``"preview": true``): the job's observer says how often it wants one
(``preview_interval``, seconds; None: never). After each step the device thread asks
``PreviewReporter.on_latents``; for each job whose interval has passed since its last preview
(or since the batch started: the first steps are mostly noise) it renders that job's slice of the
latents, encodes JPEG data URLs and hands the event to the loop. The last step gets none (the
images follow at once). A preview never fails a generation: the first error is logged, and this
batch makes no more previews.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tinyimg.families.preview import encode_data_url

log = logging.getLogger("tinyimg.engine")

# (job, payload) -> deliver in the event loop (the worker posts it with call_soon_threadsafe).
Deliver = Callable[[Any, dict[str, Any]], None]


@dataclass
class PreviewSlot:
    job: Any  # the worker's Job
    start: int  # its first image in the batch
    count: int  # its images
    interval: float  # seconds between its previews
    last: float  # when it last had one (the batch's start at first)


def build_preview_slots(jobs: Sequence[Any], intervals: Sequence[float | None], now: float) -> list[PreviewSlot]:
    """One slot per job that wants previews (interval not None), with its images' place in the
    batch (a job's images are consecutive, in batch order)."""
    slots, start = [], 0
    for job, interval in zip(jobs, intervals, strict=True):
        count = len(job.params.seeds)
        if interval is not None:
            slots.append(PreviewSlot(job, start, count, interval, now))
        start += count
    return slots


def due_slots(slots: Sequence[PreviewSlot], step: int, total: int, now: float) -> list[PreviewSlot]:
    """The slots whose interval has passed; none at the last step (its images come right after)."""
    if step >= total:
        return []
    return [s for s in slots if now - s.last >= s.interval]


class PreviewReporter:
    def __init__(self, slots: list[PreviewSlot], deliver: Deliver, model: str,
                 clock: Callable[[], float] = time.monotonic):
        self.slots, self.deliver, self.model, self.clock = slots, deliver, model, clock
        self.failed = False

    def on_latents(self, step: int, total: int, render: Callable[[int, int], list[Any]]) -> None:
        """A handler's ``on_latents`` hook (device thread)."""
        if self.failed:
            return
        now = self.clock()
        try:
            for slot in due_slots(self.slots, step, total, now):
                if slot.job.future.done():  # cancelled or answered: nobody reads its previews
                    continue
                images = render(slot.start, slot.count)
                slot.last = now
                self.deliver(slot.job, build_preview_event(step, total, images))
        except Exception:
            self.failed = True
            log.exception("preview failed; no more previews for this batch", extra={"model": self.model})


def build_preview_event(step: int, total: int, images: list[Any]) -> dict[str, Any]:
    """The ``preview`` event's data: the step and one JPEG data URL per image of the job."""
    width, height = images[0].size if images else (0, 0)
    return {"step": step, "total_steps": total, "width": width, "height": height,
            "images": [encode_data_url(image) for image in images]}
