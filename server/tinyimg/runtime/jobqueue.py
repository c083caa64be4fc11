"""The engine's one queue of waiting requests, shared by every device worker.

A model with replicas on several devices has one line of waiting requests, and whichever of its
devices is free takes the next batch from it: a long batch on one GPU does not hold back requests
another GPU could run. Lives in the event loop (no locks): workers take jobs between awaits.

Bound: per model. Each model may have ``runtime.queueSize`` requests waiting (in-flight ones do not
count), so a busy model cannot fill the queue of a quiet one beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container
from typing import TYPE_CHECKING

from tinyimg.runtime.jobs import QueueFull

if TYPE_CHECKING:
    from tinyimg.runtime.worker import Job


class JobQueue:
    def __init__(self, limits: dict[str, int]):
        self.limits = limits
        self.pending: list[Job] = []
        self._listeners: list[asyncio.Event] = []

    def listen(self) -> asyncio.Event:
        """An event set whenever the queue changes (a worker waits on it)."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    def _changed(self) -> None:
        for event in self._listeners:
            event.set()

    def submit(self, job: Job) -> None:
        waiting = self.depth(job.model)
        if waiting >= self.limits.get(job.model, 1):
            raise QueueFull(f"model {job.model!r}", waiting)
        self.pending.append(job)
        self._changed()

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
