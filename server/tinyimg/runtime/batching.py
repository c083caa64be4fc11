"""Which queued jobs ride in the next pipeline call: a pure function of the queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tinyimg.runtime.jobs import GenerationParams


class Batchable(Protocol):
    model: str
    params: GenerationParams


def pick_batch(pending: Sequence[Batchable], max_images: int) -> list[Batchable]:
    """The head job, plus later jobs of the same model and batch key while the images fit.

    The head always runs, even when it alone asks for more than ``max_images`` (its images are not
    split across calls). Jobs that do not fit or do not match keep their place in the queue."""
    if not pending:
        return []
    head = pending[0]
    key = head.params.batch_key()
    chosen = [head]
    images = len(head.params.seeds)
    for job in pending[1:]:
        count = len(job.params.seeds)
        if job.model == head.model and job.params.batch_key() == key and images + count <= max_images:
            chosen.append(job)
            images += count
    return chosen
