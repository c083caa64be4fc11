"""One worker per device: batching, and ONE pipeline call at a time.

diffusers pipelines are not thread-safe, and two calls on one GPU only fight over memory, so each
device gets a single-thread executor; loading, warm-up and every generation for the models loaded
on it run on that thread. Waiting requests live in the engine's one ``JobQueue`` (in the event
loop), shared by every worker: a free worker takes the next batch of any model it holds a replica
of. Only pipeline work crosses to the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tinyimg.core.tracing import use_span
from tinyimg.families.base import GeneratedImage, GenerationParams, Handler
from tinyimg.families.variants import AdapterLoadError
from tinyimg.runtime.batchtrace import BatchTimeline, record_batch_spans
from tinyimg.runtime.devices import is_out_of_memory, release_cuda_cache
from tinyimg.runtime.jobqueue import CompanyGather, GatherPolicy, JobQueue
from tinyimg.runtime.jobs import DeadlineExceeded, EngineError, GenerationFailed, GenerationResult, Job
from tinyimg.runtime.oom import OutOfMemory, generate_within_memory
from tinyimg.runtime.previews import PreviewReporter, build_preview_slots
from tinyimg.runtime.warmup import Shape

log = logging.getLogger("tinyimg.engine")

BatchCallback = Callable[[str, int, float], None]


class DeviceWorker:
    def __init__(self, device: str, queue: JobQueue, on_batch: BatchCallback | None = None,
                 gather: GatherPolicy | None = None):
        self.device = device
        self.queue = queue
        self.on_batch = on_batch
        self.gather = gather or CompanyGather()
        # model -> its handler loaded on this device: the worker takes only these models' jobs
        self.handlers: dict[str, Handler] = {}
        self.warmed: dict[str, set[tuple[Any, ...]]] = {}  # compiled model -> (width, height, images, loras) run
        self.recompiles: dict[str, int] = {}  # model -> batches at a new shape, ever
        self.running: list[Job] = []
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"tinyimg-{device}")
        self._wakeup = queue.listen()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._free_since = time.monotonic()  # when the last pipeline call ended

    # -- the event-loop side ------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"worker-{self.device}")

    def in_flight(self, model: str) -> int:
        return sum(1 for j in self.running if j.model == model)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on this device's thread (loading, warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def stop(self, error_for: Callable[[Job], EngineError], grace: float = 30.0) -> None:
        """Fail the waiting jobs of this worker's models with ``error_for(job)``, let the running
        batch finish within ``grace``."""
        self._stopping = True
        running = list(self.running)  # taken now: cancelling the task below clears self.running
        for job in self.queue.remove_for(self.handlers):
            _settle(job, error=error_for(job))
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
        for job in running:
            _settle(job, error=error_for(job))
        self.executor.shutdown(wait=False, cancel_futures=True)

    def add(self, model: str, handler: Handler, warmed: set[Shape] | None = None) -> None:
        """Take ``model``'s jobs with ``handler``; ``warmed``: the shapes a compiled model's warm-up
        ran (None: not compiled, no shape recompiles)."""
        self.handlers[model] = handler
        if warmed is not None:
            self.warmed[model] = {(*shape, ()) for shape in warmed}

    def _count_shape(self, head: Job, images: int) -> None:
        """A compiled model's batch at a shape its warm-up did not run recompiles (once per shape,
        and per set of LoRA adapters and scales: a compiled graph is specialised on those too)."""
        warmed = self.warmed.get(head.model)
        shape = (head.params.width, head.params.height, images, head.params.loras)
        if warmed is None or shape in warmed:
            return
        warmed.add(shape)
        self.recompiles[head.model] = self.recompiles.get(head.model, 0) + 1
        log.warning("a shape outside the warm-up buckets: recompiling",
                    extra={"model": head.model, "device": self.device, "shape": shape})

    def _mine(self) -> list[Job]:
        return self.queue.for_models(self.handlers)

    async def _run(self) -> None:
        while not self._stopping:
            mine = self._mine()
            if not mine:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            head = self.queue.head(mine)
            if head is None:  # every tenant with work waiting is at its maxInFlight
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather(head)
            self._drop_expired()
            # Withdrawn, expired or taken by another replica's worker while gathering: the next
            # head gathers its own batch mates.
            if head not in self.queue.pending or self._stopping:
                continue
            mine = self._mine()
            head = self.queue.head(mine)  # the picker may prefer a request that came meanwhile
            if head is None:  # its tenant reached maxInFlight meanwhile (another replica took one)
                continue
            batch = self.gather.pick([head, *(j for j in mine if j is not head)], self.queue.settings_for(head.model))
            self.queue.take(batch, among=mine)
            try:
                await self._execute(batch)
            finally:
                self.queue.release(batch)

    async def _gather(self, head: Job) -> None:
        """Wait for batch mates as long as the gather policy says (by default: while recently
        answered clients of the head's model are expected back); each arrival or withdrawal wakes
        this to decide again."""
        settings = self.queue.settings_for(head.model)
        while not self._stopping and head in self.queue.pending:
            now = time.monotonic()
            left = self.gather.wait_seconds(now, head, self._mine(), settings, free_since=self._free_since,
                                            returning=self.queue.returning(head.model, now))
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                return

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for job in [j for j in self._mine() if j.deadline <= now]:
            self.queue.withdraw(job)
            _settle(job, error=DeadlineExceeded(job.timeout, "waiting in the queue"))

    async def _execute(self, batch: list[Job]) -> None:
        start = time.monotonic()
        for job in batch:
            job.started_at = start
            _notify(job, "started")
        self.running = batch
        images = sum(len(j.params.seeds) for j in batch)
        model = batch[0].model
        progress = _step_reporter(batch) if any(j.observer for j in batch) else {}
        timeline = BatchTimeline() if any(j.trace is not None for j in batch) else None
        if timeline is not None:
            progress = _with_timeline(progress, timeline)
        self._count_shape(batch[0], images)
        handler, should_stop = self.handlers[model], _callers_gone(batch)

        def call(requests: list[GenerationParams], tiled: bool) -> list[list[GeneratedImage]]:
            # ``tiled`` only when asked: the last try of one image (handlers need not know it otherwise).
            if tiled:
                return handler.generate(requests, should_stop, **progress, tiled=True)
            return handler.generate(requests, should_stop, **progress)

        try:
            outputs = await self.call(generate_within_memory, [j.params for j in batch], call,
                                      is_out_of_memory, release_cuda_cache)
            seconds = time.monotonic() - start
            results = [
                generated if isinstance(generated, OutOfMemory)
                else GenerationResult(generated, self.device, start - job.enqueued_at, seconds, images)
                for job, generated in zip(batch, outputs, strict=True)
            ]
        except Exception as err:  # one failed call (or a handler's wrong answer) fails its batch, never the worker
            self.running = []
            if timeline is not None:
                record_batch_spans(batch, timeline, self.device, error=f"{type(err).__name__}: {err}")
            await self._fail(batch, err)
            return
        finally:
            self.running = []
            self._free_since = time.monotonic()
        # Before the answers: the spans are recorded when the callers' own spans end.
        pipeline = record_batch_spans(batch, timeline, self.device) if timeline is not None else None
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, OutOfMemory):
                _settle(job, error=self._classify(result, model, [job.params.request_id]))
            else:
                _settle(job, result=result)
        self.queue.answered(model, len(batch))
        # The batch's span is current here: the histograms take it as their exemplar, the log line its ids.
        with use_span(pipeline) if pipeline is not None else contextlib.nullcontext():
            if self.on_batch is not None:
                try:
                    self.on_batch(model, images, seconds)
                except Exception:  # a metrics hook must never stop the device's worker
                    log.exception("on_batch callback failed", extra={"model": model, "device": self.device})
            log.info(
                "batch done",
                extra={"model": model, "device": self.device, "images": images, "seconds": round(seconds, 4),
                       "request_ids": [j.params.request_id for j in batch]},
            )

    async def _fail(self, batch: list[Job], err: Exception) -> None:
        """A failed pipeline call (out of memory is split and retried before: tinyimg.runtime.oom).
        Any other error may come from one request's input (a prompt the tokenizer rejects), so a
        batch of several runs again one request at a time: only the request that fails alone fails."""
        error = self._classify(err, batch[0].model, [j.params.request_id for j in batch])
        if isinstance(err, AdapterLoadError):  # every request of the batch names the adapter
            for job in batch:
                _settle(job, error=error)
            return
        retry = [job for job in batch if not job.future.done()]
        if len(batch) == 1 or not retry:
            for job in batch:
                _settle(job, error=error)
            return
        log.warning(
            "batch failed; running its requests one at a time",
            extra={"model": batch[0].model, "device": self.device, "request_ids": [j.params.request_id for j in retry]},
        )
        try:
            for job in retry:
                await self._execute([job])
        finally:  # cancelled by stop() past its grace: whoever was not retried yet gets the batch's error
            for job in retry:
                _settle(job, error=error)

    def _classify(self, err: Exception, model: str, request_ids: list[str]) -> EngineError:
        where = {"model": model, "device": self.device, "request_ids": request_ids}
        if isinstance(err, AdapterLoadError):
            return EngineError(f"loras: {err}", 422, "invalid_request", extra={"field": "loras"})
        if isinstance(err, OutOfMemory) or is_out_of_memory(err):
            log.error("out of GPU memory", extra={**where, "error": str(err)})
            return GenerationFailed(
                f"out of GPU memory on {self.device}, even for one image with VAE tiling; try a smaller size",
                "out_of_memory",
            )
        log.exception("generation failed", extra=where)
        return GenerationFailed(f"generation failed: {type(err).__name__}: {err}")


def _callers_gone(batch: list[Job]) -> Callable[[], bool]:
    """True once no caller of the batch waits for it (each gave up at its deadline or hung up):
    the pipeline then stops early instead of holding the device for answers nobody reads. Read
    from the device thread; a future's done() is a plain attribute read."""
    return lambda: all(job.future.done() for job in batch)


def _notify(job: Job, what: str, *args: Any) -> None:
    """Tell a job's observer; an observer's bug must never stop the device's worker."""
    if job.observer is None or job.future.done():
        return
    try:
        getattr(job.observer, what)(*args)
    except Exception:
        log.exception("job observer failed", extra={"model": job.model, "request_id": job.params.request_id})


def _step_reporter(batch: list[Job]) -> dict[str, Any]:
    """The ``on_step`` argument of a handler's generate: called on the device thread after each
    denoising step, it hands the step to the event loop for every job of the batch. With
    ``on_latents`` too when a job of the batch asked for previews (only those jobs get them)."""
    loop = asyncio.get_running_loop()

    def on_step(step: int, total: int) -> None:
        for job in batch:
            loop.call_soon_threadsafe(_notify, job, "step", step, total)

    def deliver(job: Job, preview: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(_notify, job, "preview", preview)

    hooks: dict[str, Any] = {"on_step": on_step}
    intervals = [job.observer.preview_interval if job.observer is not None else None for job in batch]
    if any(interval is not None for interval in intervals):  # nobody wants one: no preview machinery

        slots = build_preview_slots(batch, intervals, time.monotonic())
        if slots:
            hooks["on_latents"] = PreviewReporter(slots, deliver, batch[0].model).on_latents
    return hooks


def _with_timeline(hooks: dict[str, Any], timeline: BatchTimeline) -> dict[str, Any]:
    """The handler's hooks with the trace's readings added: each step, and the phase marks."""
    reported = hooks.get("on_step")

    def on_step(step: int, total: int) -> None:
        timeline.step(step, total)
        if reported is not None:
            reported(step, total)

    return {**hooks, "on_step": on_step, "on_phase": timeline.mark}


def _settle(job: Job, *, result: GenerationResult | None = None, error: EngineError | None = None) -> None:
    """Answer a job's caller, unless it already gave up."""
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        assert result is not None  # every caller passes a result or an error
        job.future.set_result(result)
