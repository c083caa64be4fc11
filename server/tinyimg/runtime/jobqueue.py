"""The engine's one queue of waiting requests, shared by every device worker.

A model with replicas on several devices has one line of waiting requests, and whichever of its
devices is free takes the next batch from it: a long batch on one GPU does not hold back requests
another GPU could run. Lives in the event loop (no locks): workers take jobs between awaits.

Bound: per model. Each model may have ``runtime.queueSize`` requests waiting (in-flight ones do not
count), so a busy model cannot fill the queue of a quiet one beside it. The model's batching
settings live here too (``QueueSettings``), once per model, not copied into each job.

It also remembers, per model, when recent requests were answered whose clients have not sent a new
request since: the batch-mates worth waiting for (``batching.wait_for_company``). Each new request
counts as one of those clients coming back.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Container, Mapping
from dataclasses import dataclass

from tinyimg.runtime.jobs import Job, QueueFull

# Answers remembered per model: far more than one batch of clients, and a bound on memory.
RETURNS_KEPT = 256


@dataclass(frozen=True)
class QueueSettings:
    """One model's line: how many may wait, and how its batches form."""

    size: int  # runtime.queueSize: requests waiting at most
    max_batch: int = 1  # runtime.maxBatchSize: images one pipeline call may carry
    max_wait: float = 0.0  # runtime.maxBatchWaitMs in seconds: how long a head may wait for mates


class JobQueue:
    def __init__(self, settings: Mapping[str, QueueSettings]):
        self.settings = dict(settings)
        self.pending: list[Job] = []
        self._listeners: list[asyncio.Event] = []
        self._returning: dict[str, deque[float]] = {}

    def listen(self) -> asyncio.Event:
        """An event set whenever the queue changes (a worker waits on it)."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    def _changed(self) -> None:
        for event in self._listeners:
            event.set()

    def check_room(self, model: str) -> None:
        waiting = self.depth(model)
        if waiting >= self.settings_for(model).size:
            raise QueueFull(f"model {model!r}", waiting)

    def settings_for(self, model: str) -> QueueSettings:
        return self.settings.get(model) or QueueSettings(size=1)

    def submit(self, job: Job) -> None:
        self.check_room(job.model)
        self.pending.append(job)
        returning = self.returning(job.model, job.enqueued_at)
        if returning:
            returning.popleft()  # one of the answered clients is back (which one does not matter)
        self._changed()

    def answered(self, model: str, count: int, now: float | None = None) -> None:
        """``count`` requests of ``model`` were answered: their clients may send their next request
        within the model's max batch wait."""
        until = (time.monotonic() if now is None else now) + self.settings_for(model).max_wait
        self._returning.setdefault(model, deque(maxlen=RETURNS_KEPT)).extend([until] * count)

    def returning(self, model: str, now: float | None = None) -> deque[float]:
        """Until when each client still expected back is awaited (earliest first); past that, it
        is not expected any more."""
        now = time.monotonic() if now is None else now
        returning = self._returning.get(model, deque())
        while returning and returning[0] <= now:
            returning.popleft()
        return returning

    def take(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.pending.remove(job)
        self._changed()

    def withdraw(self, job: Job) -> None:
        """Forget a job whose caller gave up (deadline, disconnect) before it started."""
        if job in self.pending:
            self.pending.remove(job)
            self._changed()  # it may have been the head a worker is gathering mates for

    def for_models(self, models: Container[str]) -> list[Job]:
        """Waiting jobs of these models (a worker's), in arrival order."""
        return [j for j in self.pending if j.model in models]

    def depth(self, model: str) -> int:
        return sum(1 for j in self.pending if j.model == model)

    def remove_for(self, models: Container[str]) -> list[Job]:
        """Take out every waiting job of ``models`` (shutdown); the caller answers them."""
        removed = self.for_models(models)
        for job in removed:
            self.pending.remove(job)
        self._changed()
        return removed
