"""Which queued jobs ride in the next pipeline call, and how long the head waits for more: pure
functions of the queue and the clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from tinyimg.runtime.jobs import GenerationParams


def batch_key(params: GenerationParams) -> tuple[Any, ...]:
    """What must match for requests to share one pipeline call: everything that changes the
    computation for the whole call. Prompts, seeds and input images may differ (each image gets
    its own embeddings, generator and input)."""
    return (
        params.mode,
        params.width,
        params.height,
        params.steps,
        params.guidance_scale,
        params.scheduler,
        params.loras,
        params.strength,
    )


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
