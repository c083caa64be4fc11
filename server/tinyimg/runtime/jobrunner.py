"""The jobs service: every generation, synchronous or not, is a job run here (one code path).

``create`` queues the request in the engine at once (so a full queue or an unknown model is
refused to the caller, not recorded as a failed job) and starts a task that waits for the result,
encodes the images off the event loop and records the terminal event. While it waits, the engine
tells the job when it starts and after each denoising step; a watcher moves the positions of
queued jobs whenever the queue changes. ``cancel`` cancels that task: a queued job leaves the
queue at once; a running one is dropped from its batch, and the batch stops at the next step when
no other job still wants it (batch mates get their images).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tinyimg import imaging
from tinyimg.errors import ApiError
from tinyimg.runtime.jobstore import JobRecord, JobStore, new_job_id
from tinyimg.spec import JobsConfig

log = logging.getLogger("tinyimg.jobs")

# Weight of the newest step time in a model's running estimate (the ETA's basis).
STEP_TIME_WEIGHT = 0.3

Hook = Callable[[JobRecord], None]


def encode_all(images: list[Any], output_format: str) -> list[bytes]:
    return [imaging.encode_image(image, output_format) for image in images]


class JobEvents:
    """The engine's ``JobObserver`` for one job: turns what the engine says into job events."""

    def __init__(self, service: JobService, record: JobRecord):
        self.service, self.record = service, record
        self.preview_interval = service.config.preview_interval_ms / 1000 if record.preview else None

    def started(self) -> None:
        self.service.mark_started(self.record)

    def step(self, step: int, total: int) -> None:
        self.service.mark_step(self.record, step, total)

    def preview(self, data: dict[str, Any]) -> None:
        self.service.mark_preview(self.record, data)


SWEEP_MIN_SECONDS, SWEEP_MAX_SECONDS = 0.05, 60.0


class JobService:
    def __init__(
        self, engine: Any, config: JobsConfig, *, on_finish: Hook | None = None,
        deliver_webhook: Hook | None = None, clock: Callable[[], float] = time.monotonic,
    ):
        self.engine, self.config, self.clock = engine, config, clock
        self.store = JobStore(config.result_ttl_seconds, config.max_result_bytes, clock)
        self.on_finish = on_finish
        self.deliver_webhook = deliver_webhook
        self.webhooks: Any = None  # the WebhookSender the app wires in (stopped with the app)
        self.step_seconds: dict[str, float] = {}  # model -> recent seconds per denoising step
        self._watcher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self._watch_queue(), name="job-positions")
        self._sweeper = loop.create_task(self._sweep(), name="job-results-sweep")

    async def stop(self) -> None:
        for background in (self._watcher, self._sweeper):
            if background is not None:
                background.cancel()
        tasks = [r.task for r in self.store.active() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sweep(self) -> None:
        """Expired results leave memory even when nobody asks (the store also evicts on every
        use): checked every half TTL, at most every SWEEP_MAX_SECONDS."""
        interval = max(SWEEP_MIN_SECONDS, min(self.store.ttl / 2, SWEEP_MAX_SECONDS))
        while True:
            await asyncio.sleep(interval)
            self.store.evict()

    async def _watch_queue(self) -> None:
        changed = self.engine.listen_queue()
        while True:
            await changed.wait()
            changed.clear()
            for record in self.store.active():
                if record.status == "queued" and record.entry is not None:
                    self._update_position(record)

    def _update_position(self, record: JobRecord) -> None:
        position = self.engine.position(record.entry)
        if position is not None and position != record.position:
            record.position = position
            record.publish("queued", {"position": position})

    # -- jobs -------------------------------------------------------------------------------
    def create(
        self, model: str, params: Any, output_format: str, *, webhook: str | None = None,
        key_hash: str | None = None, keep: bool = True, job_id: str | None = None, preview: bool = False,
    ) -> JobRecord:
        """``job_id``: the id a router chose (its signed id names it before the pod answers);
        refused with 409 when taken: another id would not be the one the router handed out."""
        if job_id is not None and self.store.is_taken(job_id):
            raise ApiError(f"job id {job_id} is already in use here", 409, "job_id_taken")
        record = JobRecord(
            job_id or new_job_id(), model, params, output_format, webhook, key_hash, keep, preview=preview
        )
        record.total_steps = params.steps
        record.entry = self.engine.submit(model, params, observer=JobEvents(self, record))
        self.store.add(record)
        self._update_position(record)
        record.task = asyncio.get_running_loop().create_task(self._run(record), name=f"job-{record.id}")
        return record

    def get(self, job_id: str) -> JobRecord:
        return self.store.get(job_id)

    def cancel(self, record: JobRecord) -> bool:
        """Cancelled now (the answer to DELETE says so); False when it had already finished."""
        if record.finished:
            return False
        if record.entry is not None:
            self.engine.cancel(record.entry)
        elif record.task is not None:  # past the pipeline, encoding
            record.task.cancel()
        self._finish(record, "cancelled", {})
        return True

    async def _run(self, record: JobRecord) -> None:
        try:
            result = await self.engine.wait(record.entry)
            record.entry = None
            # Encoding a large PNG takes tens of milliseconds: keep it off the event loop.
            encoded = await asyncio.to_thread(encode_all, [i.image for i in result.images], record.output_format)
        except asyncio.CancelledError:
            if not record.finished:  # the server stops (cancel() has finished it otherwise)
                self._finish(record, "cancelled", {})
            return
        except ApiError as err:
            self._finish(record, "failed", {"error": build_error_data(err)}, error=err)
            return
        except Exception:  # a bug: the job fails with the usual shape (details only in the log)
            log.exception("job failed", extra={"job_id": record.id, "model": record.model,
                                               "request_id": record.params.request_id})
            error = ApiError("internal server error; see the server log", 500, "internal_error")
            self._finish(record, "failed", {"error": build_error_data(error)}, error=error)
            return
        if record.finished:  # cancelled while its images were being encoded
            return
        record.images, record.seeds = encoded, [i.seed for i in result.images]
        record.queued_seconds, record.inference_seconds = result.queued_seconds, result.inference_seconds
        record.device, record.batch_size = result.device, result.batch_size
        record.step = max(record.step, record.total_steps)
        self._finish(record, "succeeded", {"images": len(encoded), "seeds": record.seeds})

    def mark_started(self, record: JobRecord) -> None:
        if record.finished:
            return
        record.status, record.position = "running", None
        record.started_at, record.started_mono = time.time(), self.clock()
        record.last_step_mono = record.started_mono
        record.eta_seconds = self._eta(record)
        record.publish("started", {"total_steps": record.total_steps, "eta_seconds": record.eta_seconds})

    def mark_step(self, record: JobRecord, step: int, total: int) -> None:
        if record.finished:
            return
        now = self.clock()
        if record.last_step_mono is not None and step > record.step:
            seconds = (now - record.last_step_mono) / (step - record.step)
            previous = self.step_seconds.get(record.model)
            self.step_seconds[record.model] = (
                seconds if previous is None else previous + STEP_TIME_WEIGHT * (seconds - previous)
            )
        record.step, record.total_steps, record.last_step_mono = step, total, now
        record.eta_seconds = self._eta(record)
        # Fast models finish steps in milliseconds: at most one event per interval, and the last step always.
        if step < total and now - record.last_progress_mono < self.config.progress_interval_ms / 1000:
            return
        record.last_progress_mono = now
        record.publish("progress", {
            "step": step, "total_steps": total, "elapsed_seconds": round(now - (record.started_mono or now), 4),
            "eta_seconds": record.eta_seconds,
        })

    def mark_preview(self, record: JobRecord, data: dict[str, Any]) -> None:
        """A preview the worker made (already throttled to ``previewIntervalMs`` there, where
        skipping one saves its cost)."""
        if record.finished:
            return
        record.publish("preview", data)

    def _eta(self, record: JobRecord) -> float | None:
        per_step = self.step_seconds.get(record.model)
        if per_step is None:
            return None
        return round(per_step * max(0, record.total_steps - record.step), 3)

    def _finish(self, record: JobRecord, status: str, data: dict[str, Any], error: ApiError | None = None) -> None:
        if record.finished:
            return
        record.status, record.error, record.position, record.entry = status, error, None, None
        record.finished_at, record.eta_seconds = time.time(), None
        record.publish(status, data)
        record.done.set()
        self.store.finish(record)
        for hook in (self.on_finish, self.deliver_webhook if record.webhook else None):
            if hook is None:
                continue
            try:
                hook(record)
            except Exception:  # a metrics or webhook hook must not lose the job's result
                log.exception("job hook failed", extra={"job_id": record.id})


def build_error_data(err: ApiError) -> dict[str, Any]:
    return {"code": err.code, "message": err.message, "status": err.status, **err.extra}
