"""Which queued jobs ride in the next pipeline call, and how long the head waits for more: pure
functions of the queue and the clock, and the gather policy a device worker applies them by."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from tinyimg.families.generation import GenerationParams, batch_key
from tinyimg.runtime.jobqueue import QueueSettings
from tinyimg.runtime.jobs import Job


class Batchable(Protocol):
    model: str
    params: GenerationParams


JobT = TypeVar("JobT", bound=Batchable)


def pick_batch(pending: Sequence[JobT], max_images: int) -> list[JobT]:
    """The head job, plus later jobs of the same model and batch key while the images fit.

    The head always runs, even when it alone asks for more than ``max_images`` (its images are not
    split across calls). Jobs that do not fit or do not match keep their place in the queue."""
    if not pending:
        return []
    head = pending[0]
    key = batch_key(head.params)
    chosen = [head]
    images = len(head.params.seeds)
    for job in pending[1:]:
        count = len(job.params.seeds)
        if job.model == head.model and batch_key(job.params) == key and images + count <= max_images:
            chosen.append(job)
            images += count
    return chosen


def wait_for_company(
    now: float, *, images: int, max_images: int, latest_start: float, returning: Sequence[float]
) -> float:
    """Seconds the head of the queue should still wait for batch mates; 0 means run now.

    ``returning`` holds one time per request of this model answered recently whose client has not
    sent another request since: until when that client is expected back (its answer plus the
    model's ``maxBatchWaitMs``). Those clients are the company worth waiting for: a client that
    just got its images typically sends its next request within milliseconds (a user clicking
    again, the eight workers of a batch job coming back together). The head waits until the last
    of them is due, never past ``latest_start`` (its max wait after the device could have run it,
    or its deadline), and not at all once the batch is full. With
    nobody expected, it runs at once: a lone request at an idle device does not wait for company
    that is not coming, and requests that arrived while the device was busy are already together
    in the queue."""
    if images >= max_images:
        return 0.0
    latest = max(returning, default=now)
    return max(0.0, min(latest, latest_start) - now)


class GatherPolicy(Protocol):
    """How a device worker forms its next batch (``DeviceWorker(gather=...)``): which waiting jobs
    ride with the head, and how long the head still waits for more. ``bench/batch_wait_sim.py``
    compares policies through this seam."""

    def pick(self, pending: Sequence[Job], settings: QueueSettings) -> list[Job]: ...

    def wait_seconds(self, now: float, head: Job, pending: Sequence[Job], settings: QueueSettings, *,
                     free_since: float, returning: Sequence[float]) -> float: ...


class CompanyGather:
    """The default: the head waits only for recently answered clients still due back
    (``wait_for_company``), at most its model's max wait after the device could have run it."""

    def pick(self, pending: Sequence[Job], settings: QueueSettings) -> list[Job]:
        return pick_batch(pending, settings.max_batch)

    def wait_seconds(self, now: float, head: Job, pending: Sequence[Job], settings: QueueSettings, *,
                     free_since: float, returning: Sequence[float]) -> float:
        images = sum(len(j.params.seeds) for j in self.pick(pending, settings))
        latest_start = min(head.deadline, max(head.enqueued_at, free_since) + settings.max_wait)
        return wait_for_company(now, images=images, max_images=settings.max_batch, latest_start=latest_start,
                                returning=returning)
