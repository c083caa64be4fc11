"""The engine's one queue of waiting requests, shared by every device worker, and how a worker
gathers its next batch from it (which jobs ride in one pipeline call, how long the head waits for
more: pure functions of the queue and the clock, applied through a ``GatherPolicy``).

A model with replicas on several devices has one line of waiting requests, and whichever of its
devices is free takes the next batch from it: a long batch on one GPU does not hold back requests
another GPU could run. Lives in the event loop (no locks): workers take jobs between awaits.

Bound: per model. Each model may have ``runtime.queueSize`` requests waiting (in-flight ones do not
count), so a busy model cannot fill the queue of a quiet one beside it. The model's batching
settings live here too (``QueueSettings``), once per model, not copied into each job.

Whose request heads the next batch is the fair picker's choice (``tinyimg.runtime.fairness``:
priority class, then deficit round robin across tenants); each tenant's ``maxQueued`` bounds its
waiting requests here, and its ``maxInFlight`` holds its requests back while that many run.

It also remembers, per model, when recent requests were answered whose clients have not sent a new
request since: the batch-mates worth waiting for (``wait_for_company``). Each new request
counts as one of those clients coming back.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from tinyimg.core.tenants import DEFAULT_TENANT, MAX_TENANTS, Tenant
from tinyimg.families.base import GenerationParams, batch_key
from tinyimg.runtime.fairness import FairState, Waiting, charge, pick_next
from tinyimg.runtime.jobs import Job, QueueFull, QuotaExceeded, TenantLoad

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
        self.fair = FairState()
        self.running: Counter[str] = Counter()  # tenant -> its requests generating now
        self.tenants: dict[str, Tenant] = {}  # every tenant seen (a bounded set: the keys file's)
        self.served_steps: dict[str, float] = {}  # tenant -> image-steps generated for it
        self.rejected: Counter[tuple[str, str]] = Counter()  # (tenant, reason) -> requests refused here

    def listen(self) -> asyncio.Event:
        """An event set whenever the queue changes (a worker waits on it)."""
        event = asyncio.Event()
        self._listeners.append(event)
        return event

    def _changed(self) -> None:
        for event in self._listeners:
            event.set()

    def touch(self) -> None:
        """Wake whoever waits on the queue (its settings changed)."""
        self._changed()

    def check_room(self, model: str, tenant: Tenant | None = None) -> None:
        waiting = self.depth(model)
        if waiting >= self.settings_for(model).size:
            if tenant is not None:
                self.rejected[tenant.name, "queue_full"] += 1
            raise QueueFull(f"model {model!r}", waiting)
        if tenant is not None and tenant.max_queued is not None:
            mine = sum(1 for j in self.pending if j.tenant.name == tenant.name)
            if mine >= tenant.max_queued:
                self.rejected[tenant.name, "max_queued"] += 1
                raise QuotaExceeded(tenant.name, f"{mine} requests waiting, its maxQueued is {tenant.max_queued}")

    def settings_for(self, model: str) -> QueueSettings:
        return self.settings.get(model) or QueueSettings(size=1)

    def submit(self, job: Job) -> None:
        if job.tenant.name not in self.tenants and len(self.tenants) >= MAX_TENANTS:
            job.tenant = DEFAULT_TENANT  # named by unsigned headers past any keys file's size: one bucket
        self.tenants[job.tenant.name] = job.tenant
        self.check_room(job.model, job.tenant)
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

    def head(self, jobs: Sequence[Job]) -> Job | None:
        """Which of ``jobs`` (waiting, in arrival order) should head the next batch: the fair
        picker's choice; None while every tenant with work waiting is at its maxInFlight."""
        index, _ = pick_next(self._waiting(jobs), self.fair)
        return jobs[index] if index is not None else None

    def _waiting(self, jobs: Sequence[Job]) -> list[Waiting]:
        def held(tenant: Tenant) -> bool:
            return tenant.max_in_flight is not None and self.running[tenant.name] >= tenant.max_in_flight
        return [Waiting(j.tenant.name, j.tenant.rank, j.cost, held(j.tenant)) for j in jobs]

    def take(self, jobs: list[Job], among: Sequence[Job] | None = None) -> None:
        """``jobs`` start (the first is the head the picker chose among ``among``; the others ride
        along and are charged to their tenants)."""
        if among is not None and jobs:
            index, state = pick_next(self._waiting(among), self.fair)
            if index is not None and among[index] is jobs[0]:
                self.fair = state
            for mate in jobs[1:]:
                self.fair = charge(self.fair, mate.tenant.name, mate.cost)
        for job in jobs:
            self.pending.remove(job)
            self.running[job.tenant.name] += 1
        self._changed()

    def release(self, jobs: Sequence[Job]) -> None:
        """``jobs`` stopped running (a tenant held at its maxInFlight may go on); those that got
        their images count as served."""
        for job in jobs:
            self.running[job.tenant.name] -= 1
            future = job.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self.served_steps[job.tenant.name] = self.served_steps.get(job.tenant.name, 0.0) + job.cost
        self._changed()

    def tenant_load(self) -> dict[str, TenantLoad]:
        """Per tenant seen: waiting, running, image-steps served and requests refused here."""
        out = {name: TenantLoad(queued=0, in_flight=self.running[name], image_steps=self.served_steps.get(name, 0.0),
                                rejected={}) for name in self.tenants}
        for job in self.pending:
            out[job.tenant.name]["queued"] += 1
        for (name, reason), count in self.rejected.items():
            out[name]["rejected"][reason] = count
        return out

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


# -- gathering a batch ----------------------------------------------------------------------


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
