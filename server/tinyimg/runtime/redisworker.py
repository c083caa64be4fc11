"""A model pod's share of the shared queue: it takes a job from its model's Redis stream only when
it has room, runs it through the job service like any other job, mirrors its events into Redis,
stores its images, and acknowledges the entry only after the result is stored.

- Room: at most two batches (twice ``runtime.maxBatchSize``) of a model's jobs taken and not yet
  generated per pod: one generating, the next ready to start without a round trip. The rest
  waits in Redis, where any idle pod can take it, not behind a busy pod. A job's room is free
  once it has generated (its images are stored while the next runs).
- Liveness: while a job runs, its entry's idle time is reset every third of the visibility
  timeout; a pod that dies stops doing so, and after the timeout another pod claims the entry.
  Each claim counts an attempt; past ``jobs.maxAttempts`` the job fails ``worker_lost``.
- Cancel: the same heartbeat reads the job's status; a job cancelled in Redis is cancelled here.
- Readiness: a pod takes a model's jobs only while the model is loaded (not while it loads, nor
  after it failed to load).
- Drain: once the engine drains, nothing new is taken; what was taken and could not start (the
  engine refused it, or failed it ``draining``) is handed back at once, uncounted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import TERMINAL, JobIdentity
from tinyimg.core.tenants import DEFAULT_TENANT, read_tenant_description
from tinyimg.core.tracing import extract_dict, span
from tinyimg.durable.jobdocs import StoredJob
from tinyimg.durable.redisjobs import QueueUnavailable, RedisJobs
from tinyimg.durable.results import StorageUnavailable
from tinyimg.runtime.jobresults import store_record
from tinyimg.runtime.jobrunner import JobOrder, JobService
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.jobviews import build_stored_job
from tinyimg.spec import JobsConfig, ModelSpec
from tinyimg.wire.requests import JobRequest

log = logging.getLogger("tinyimg.jobs")

# Refusals that say "not here, not now" (this pod is stopping, still loading, or full): the job
# goes back to the queue for another pod, its attempt not counted.
HAND_BACK_CODES = frozenset({"draining", "model_not_ready", "queue_full"})
BLOCK_MS = 1000
RETRY_SECONDS = 1.0
STATS_SECONDS = 2.0
NOT_READY_SECONDS = 0.25
# A running job's document (what GET answers: its step, its ETA) is rewritten at most this often;
# every event still goes out at once.
DOC_INTERVAL_SECONDS = 0.5


@dataclass
class WorkerCounts:
    """What ``/metrics`` reports of the shared queue on this pod."""

    taken: int = 0
    redeliveries: int = 0  # entries this pod took after another pod had taken them
    handed_back: int = 0
    lost: int = 0  # failed worker_lost here
    failures: dict[str, int] = field(default_factory=dict)  # queue errors by operation


class RedisJobWorker:
    def __init__(self, service: JobService, queue: RedisJobs, config: JobsConfig, models: Sequence[ModelSpec], consumer: str):
        self.service, self.queue, self.config, self.consumer = service, queue, config, consumer
        self.engine = service.engine
        self.room = {m.name: 2 * m.runtime.max_batch_size for m in models}
        self.in_flight: dict[str, int] = dict.fromkeys(self.room, 0)
        self._freed = {model: asyncio.Event() for model in self.room}  # set when a taken job of it ends
        self._next_doc: dict[str, float] = {}  # job id -> when its document may be rewritten again
        self.counts = WorkerCounts()
        self.stats: dict[str, tuple[int, int]] = {}  # model -> (waiting, taken), for /metrics
        self._loops: list[asyncio.Task[None]] = []
        self._work: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._serve(model), name=f"queue-{model}") for model in self.room]
        self._loops.append(loop.create_task(self._watch_stats(), name="queue-stats"))

    async def _watch_stats(self) -> None:
        while True:
            for model in self.room:
                try:
                    self.stats[model] = await self.queue.queue_stats(model)
                except QueueUnavailable:
                    self._count_failure("stats")
            await asyncio.sleep(STATS_SECONDS)

    async def stop_taking(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def stop(self, grace: float = 10.0) -> None:
        """Take nothing more; wait up to ``grace`` for taken jobs to be stored and acknowledged
        (the engine has finished or failed them by now), or handed back."""
        await self.stop_taking()
        if self._work:
            await asyncio.wait(self._work, timeout=grace)

    async def _serve(self, model: str) -> None:
        visibility_ms = int(self.config.visibility_timeout_seconds * 1000)
        while not self.engine.is_draining():
            if not self._ready(model):  # loading, or failed to load: the model's jobs are for other pods
                await asyncio.sleep(NOT_READY_SECONDS)
                continue
            if self.in_flight[model] >= self.room[model]:
                self._freed[model].clear()
                await self._freed[model].wait()
                continue
            try:  # as many as there is room for, in one round trip
                taken = await self.queue.take(model, self.consumer, self.room[model] - self.in_flight[model], BLOCK_MS,
                                              visibility_ms)
            except QueueUnavailable as err:
                self._count_failure("take")
                log.warning("shared queue unavailable: %s", err.message, extra={"model": model})
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for entry, job_id in taken:
                self.in_flight[model] += 1
                self.counts.taken += 1
                task = asyncio.get_running_loop().create_task(self._run(model, entry, job_id), name=f"queued-{job_id}")
                self._work.add(task)
                task.add_done_callback(self._work.discard)

    def _ready(self, model: str) -> bool:
        return any(view.name == model and view.state == "ready" for view in self.engine.model_states())

    def _count_failure(self, operation: str) -> None:
        self.counts.failures[operation] = self.counts.failures.get(operation, 0) + 1

    async def _run(self, model: str, entry: str, job_id: str) -> None:
        freed = False

        def free() -> None:  # once generating is over: the next job can start while this one is stored
            nonlocal freed
            if not freed:
                freed = True
                self.in_flight[model] -= 1
                self._freed[model].set()

        try:
            await self._take(model, entry, job_id, free)
        except QueueUnavailable as err:  # the entry stays pending: claimed again after the timeout
            self._count_failure("run")
            log.warning("shared queue lost while running a job: %s", err.message, extra={"job_id": job_id})
        except Exception:
            log.exception("queued job failed in the worker", extra={"job_id": job_id})
        finally:
            free()

    async def _take(self, model: str, entry: str, job_id: str, free: Callable[[], None]) -> None:
        job = await self.queue.claim(job_id)
        if job is None or job.finished:  # expired, cancelled while queued, or finished by an earlier taker
            await self.queue.ack(model, entry)
            return
        attempts = job.attempts
        if attempts > 1:
            self.counts.redeliveries += 1
        if attempts > self.config.max_attempts:
            self.counts.lost += 1
            await self._fail(job, ApiError(
                f"the job was taken {attempts - 1} times by pods that stopped before finishing it "
                f"(jobs.maxAttempts {self.config.max_attempts})", 500, "worker_lost"))
            await self.queue.ack(model, entry)
            return
        try:
            # In the trace of the request that queued it: its queue, pipeline and storage spans go there.
            with span("shared_queue.take", {"tinyimg.job_id": job.id, "tinyimg.attempt": attempts},
                      parent=extract_dict(job.order.get("trace"))):
                record = await self.service.submit(self._order(job))
            record.trace_headers = dict(job.order.get("trace") or {})
        except ApiError as err:
            if err.code in HAND_BACK_CODES:
                await self._hand_back(model, entry, job_id)
            else:  # this job cannot run anywhere (its adapter failed to load, ...)
                await self._fail(job, err)
                await self.queue.ack(model, entry)
            return
        outcome = await self._follow(model, entry, job, record, free)
        if outcome == "hand back":
            await self._hand_back(model, entry, job_id)
        else:
            await self.queue.ack(model, entry)

    def _order(self, job: StoredJob) -> JobOrder:
        order = job.order
        identity = JobIdentity(job.id, order.get("public_id"), order.get("public_base_url"), order.get("key_hash"))
        return JobOrder(
            JobRequest.model_validate(order["request"]), order["output_format"], order["base_url"],
            order.get("key_hash"), webhook=order.get("webhook"), preview=bool(order.get("preview")),
            keep=False, durable=True, identity=identity,
            tenant=read_tenant_description(order.get("tenant")) or DEFAULT_TENANT,
        )

    async def _hand_back(self, model: str, entry: str, job_id: str) -> None:
        self.counts.handed_back += 1
        await self.queue.hand_back(model, entry, job_id)

    async def _fail(self, job: StoredJob, err: ApiError) -> None:
        job.status = "failed"
        error = {"code": err.code, "message": err.message, "status": err.status}
        job.doc = {**job.doc, "status": "failed", "error": error, "finished_at": time.time(), "position": None}
        await self.queue.update(job, ("failed", {"error": error}))

    async def _follow(self, model: str, entry: str, job: StoredJob, record: JobRecord, free: Callable[[], None]) -> str:
        """Mirror the job's events into Redis and keep its claim alive until it finishes; then
        store its state. Returns "done" or "hand back" (it could not run here)."""
        heartbeat = self.config.visibility_timeout_seconds / 3
        listener, after, next_beat = record.listen(), 0, time.monotonic() + heartbeat
        try:
            while not record.finished:
                try:
                    await asyncio.wait_for(listener.wait(), max(0.0, next_beat - time.monotonic()))
                except TimeoutError:
                    pass
                listener.clear()
                after = await self._mirror(job, record, after)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + heartbeat
                    await self.queue.heartbeat(model, self.consumer, entry)
                    current = await self.queue.read(job.id)
                    if current is None or current.status == "cancelled":
                        self.service.cancel(record)
        finally:
            record.unlisten(listener)
            self._next_doc.pop(job.id, None)
        free()
        if record.status == "failed" and record.error is not None and record.error.code in HAND_BACK_CODES:
            return "hand back"
        if record.status == "cancelled":  # in Redis (DELETE), or this pod stopped under it
            current = await self.queue.read(job.id)
            return "done" if current is None or current.finished else "hand back"
        stored = self._stored(job, record)
        if record.status == "succeeded" and self.service.results is not None:
            # Beside its images, before Redis says succeeded: a reader that sees the state finds the
            # record, and a pod stopped between the two leaves a running job to be taken again.
            try:
                await store_record(self.service.results, stored)
            except StorageUnavailable as err:
                log.warning("job record not stored: %s", err.message, extra={"job_id": job.id})
        terminal = next(e for e in reversed(record.events) if e.name in TERMINAL)
        await self.queue.update(stored, (terminal.name, terminal.data), with_order=True)  # with its image keys
        return "done"

    @staticmethod
    def _stored(job: StoredJob, record: JobRecord) -> StoredJob:
        """The job as this pod has run it, created when it was (not when this pod took it)."""
        stored = build_stored_job(record)
        stored.doc["created_at"] = job.doc.get("created_at", stored.doc["created_at"])
        return stored

    async def _mirror(self, job: StoredJob, record: JobRecord, after: int) -> int:
        """The events of ``record`` after number ``after`` into Redis, all but the terminal one
        (written once the result is stored) and queue moves (positions come from Redis)."""
        for event in record.events_after(after):
            after = event.id
            if event.name in TERMINAL or event.name == "queued":
                continue
            if event.name == "preview" or (event.name == "progress" and time.monotonic() < self._next_doc.get(job.id, 0)):
                await self.queue.publish(job.id, event.name, event.data)  # an event only; the document can wait
                continue
            self._next_doc[job.id] = time.monotonic() + DOC_INTERVAL_SECONDS
            stored = self._stored(job, record)
            stored.status = "running"
            await self.queue.update(stored, (event.name, event.data))
        return after
