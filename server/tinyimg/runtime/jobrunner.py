"""The job service: every generation, synchronous or not, is a job created, run and finished here
(one code path); the routes parse a request, hand it over as a ``JobOrder`` and answer what comes
back (``tinyimg.runtime.jobviews`` describes a job).

``submit`` resolves the request against its model (defaults, limits, input images) and ``create``
queues it in the engine at once (so a full queue or an unknown model is refused to the caller, not
recorded as a failed job) and starts a task that waits for the result, encodes the images off the
event loop and records the terminal event. ``finish`` is what a caller that waits does: it returns
the finished job, or cancels it when the caller hangs up first. While it waits, the engine
tells the job when it starts and after each denoising step; a watcher moves the positions of
queued jobs whenever the queue changes. ``cancel`` cancels that task: a queued job leaves the
queue at once; a running one is dropped from its batch, and the batch stops at the next step when
no other job still wants it (batch mates get their images).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import JobIdentity, new_job_id
from tinyimg.core.logs import request_id_var
from tinyimg.core.quota import OverBudget, Quotas
from tinyimg.core.tenants import DEFAULT_TENANT, Tenant, image_steps
from tinyimg.core.tracing import inject_dict, span
from tinyimg.durable.jobdocs import StoredJob
from tinyimg.durable.results import ResultStore, StorageUnavailable
from tinyimg.families.base import GeneratedImage, GenerationParams
from tinyimg.provenance.audit import build_audit_record
from tinyimg.provenance.manifest import SigningKey
from tinyimg.provenance.stamp import Stamp, build_stamp, finish_images
from tinyimg.runtime.jobresults import store_audit, store_images, store_record
from tinyimg.runtime.jobs import EngineApi, ModelNotFound
from tinyimg.runtime.jobstore import JobRecord, JobStore, drop_inputs
from tinyimg.runtime.jobviews import build_error_data, build_stored_job
from tinyimg.runtime.params import ModelRules, build_generation_params, build_model_rules, build_parameters_response
from tinyimg.runtime.webhooks import WebhookSender
from tinyimg.safety.policy import apply_policy, build_flag, check_prompts, compile_deny_list
from tinyimg.spec import JobsConfig, ModelSpec
from tinyimg.wire.requests import GenerateRequest, OutputFormat

if TYPE_CHECKING:
    from tinyimg.durable.redisjobs import RedisJobs
    from tinyimg.runtime.adapters import AdapterLibrary

log = logging.getLogger("tinyimg.jobs")
audit_log = logging.getLogger("tinyimg.audit")  # one line per finished job: the audit record

# Weight of the newest step time in a model's running estimate (the ETA's basis).
STEP_TIME_WEIGHT = 0.3

Hook = Callable[[JobRecord], None]


@dataclass(frozen=True)
class JobOrder:
    """What a route asks of the job service: the request as parsed, and who asks, from where."""

    request: GenerateRequest
    output_format: str
    base_url: str  # the creating request's, for the job's URLs (and its webhook's)
    key_hash: str | None = None  # the API key's hash when keys are on: reads need the same key
    webhook: str | None = None  # already checked against the allow-list
    preview: bool = False
    keep: bool = True  # False: a synchronous answer, forgotten once its caller has it
    durable: bool = False  # taken from the shared queue (Redis): its results are stored, not kept here
    identity: JobIdentity = field(default_factory=JobIdentity)  # what a router said about it
    tenant: Tenant = DEFAULT_TENANT  # whose it is (tinyimg.core.tenants): its place in the fair queue
    charge: bool = False  # count its work against the tenant's budget here (a tenant of this server's keys file)


class ClientDisconnected(ApiError):
    """The client hung up before its answer: its job left the queue. 499 is nginx's code for it;
    nobody reads the answer, but the access log and the metrics do."""

    def __init__(self) -> None:
        super().__init__("the client closed the connection; its request was withdrawn", 499, "client_disconnected")


class JobCancelled(ApiError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled (DELETE /v1/jobs/{job_id})", 409, "job_cancelled")


def build_job_stamp(record: JobRecord, spec: ModelSpec | None, signing: SigningKey | None = None) -> Stamp | None:
    """What the model's provenance settings put into this job's images (None: nothing)."""
    if spec is None:
        return None
    parameters = build_parameters_response(record.params, cast(OutputFormat, record.output_format)).model_dump(mode="json")
    return build_stamp(spec.provenance, parameters, record.model, os.environ.get("TINYIMG_REVISION"), signing)


def build_job_audit(record: JobRecord) -> dict[str, Any]:
    """The job's audit record (``tinyimg.provenance.audit``): never its prompt or key."""
    parameters = build_parameters_response(record.params, cast(OutputFormat, record.output_format)).model_dump(mode="json")
    images = record.images if record.status == "succeeded" else []
    error = record.error.code if record.error is not None else None
    return build_audit_record(
        job_id=record.id, status=record.status, model=record.model, revision=os.environ.get("TINYIMG_REVISION"),
        tenant=record.tenant.name, key_hash=record.key_hash, parameters=parameters, images=images,
        seeds=record.seeds[:len(images)], content_flags=record.content_flags, error_code=error,
        finished_at=record.finished_at)


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


class JobsApi(Protocol):
    """The job service as the routes use it (``JobService``)."""

    quotas: Quotas | None
    adapters: AdapterLibrary | None
    signing: SigningKey | None

    async def submit(self, order: JobOrder) -> JobRecord: ...
    def apply_model_spec(self, spec: ModelSpec) -> None: ...
    def apply_jobs_config(self, config: JobsConfig) -> None: ...
    async def enqueue(self, order: JobOrder) -> StoredJob: ...
    async def finish(self, record: JobRecord, hangup: Callable[[], Awaitable[None]]) -> JobRecord: ...
    async def run(self, order: JobOrder, hangup: Callable[[], Awaitable[None]]) -> JobRecord: ...
    def get(self, job_id: str) -> JobRecord: ...
    def cancel(self, record: JobRecord) -> bool: ...


class JobService(JobsApi):
    def __init__(
        self, engine: EngineApi, config: JobsConfig, *, models: Sequence[ModelSpec] = (),
        on_finish: Hook | None = None, deliver_webhook: Hook | None = None, webhooks: WebhookSender | None = None,
        clock: Callable[[], float] = time.monotonic, results: ResultStore | None = None, queue: RedisJobs | None = None,
        quotas: Quotas | None = None, adapters: AdapterLibrary | None = None, signing: SigningKey | None = None,
    ):
        """``webhooks``: the sender ``deliver_webhook`` schedules on; stopped with the service.
        ``results``: where finished jobs are written (their images then have capability URLs);
        ``queue``: the shared queue ``enqueue`` puts jobs on (``tinyimg.durable.redisjobs``);
        ``adapters``: where adapters named by URL or registered are fetched (none: only declared ones);
        ``signing``: the key that signs C2PA manifests (models with ``provenance.c2pa``)."""
        self.engine, self.config, self.clock, self.signing = engine, config, clock, signing
        self.results, self.queue, self.quotas, self.adapters = results, queue, quotas, adapters
        self.models: Mapping[str, ModelRules] = {m.name: build_model_rules(m) for m in models}
        self.store = JobStore(config.result_ttl_seconds, config.max_result_bytes, clock)
        self.on_finish = on_finish
        self.deliver_webhook = deliver_webhook
        self.webhooks = webhooks
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
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.adapters is not None:
            await self.adapters.close()

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
        if record.entry is None:
            return
        position = self.engine.position(record.entry)
        if position is not None and position != record.position:
            record.position = position
            record.publish("queued", {"position": position})

    def apply_model_spec(self, spec: ModelSpec) -> None:
        """A model's new defaults and limits (a config reload): the next request resolves with them."""
        self.models = {**self.models, spec.name: build_model_rules(spec)}

    def apply_jobs_config(self, config: JobsConfig) -> None:
        """New live jobs settings (a config reload): result TTL and memory bound, event pacing,
        webhook delivery; jobs already running keep the pacing they started with."""
        self.config = config
        self.store.ttl, self.store.max_bytes = config.result_ttl_seconds, config.max_result_bytes
        if self.webhooks is not None:
            self.webhooks.config = config
        self.store.evict()

    # -- jobs -------------------------------------------------------------------------------
    async def submit(self, order: JobOrder) -> JobRecord:
        """Resolve the request against its model (defaults, limits) and queue it as a job; refused
        now when the model is unknown or not ready or its queue is full."""
        params = await self._resolve(order.request, admit=True)
        async with self._charged(order, params):
            return self.create(order.request.model, params, order)

    @asynccontextmanager
    async def _charged(self, order: JobOrder, params: GenerationParams) -> AsyncIterator[None]:
        """The tenant's budget pays for the work (429 ``quota_exceeded`` when it cannot), and is
        paid back when the job is refused after all."""
        tenant, limit = order.tenant, order.tenant.image_steps_per_minute
        if not order.charge or limit is None or self.quotas is None:
            yield
            return
        cost = image_steps(params.width, params.height, params.steps, len(params.seeds))
        admission = await self.quotas.admit(tenant.name, cost, limit)
        if not admission.allowed:
            raise OverBudget(tenant.name, cost, admission)
        try:
            yield
        except BaseException:
            await self.quotas.refund(tenant.name, cost, limit)
            raise

    async def _resolve(self, body: GenerateRequest, admit: bool) -> GenerationParams:
        """The request against its model's defaults and limits (404 for an unknown model).
        ``admit``: the engine must take it now; checked before an input image is decoded, so a
        request refused for a full queue or a model not ready does not cost the decoding
        (hundreds of ms and MB for a large input); decoding and resizing run off the event loop."""
        rules = self.models.get(body.model)
        if rules is None:
            raise ModelNotFound(body.model, list(self.models))
        if rules.spec.safety.deny_prompts:  # before anything is fetched or queued: a refused prompt costs nothing
            check_prompts(compile_deny_list(tuple(rules.spec.safety.deny_prompts)), body.prompt, body.negative_prompt)
        fetched = None
        if body.loras and self.adapters is not None:
            if admit:
                self.engine.check_admits(body.model)  # before a download
            fetched = await self.adapters.fetch_request(body.loras, rules.spec)
        if body.image is None:
            return build_generation_params(body, rules, request_id_var.get(), fetched=fetched)
        if admit:
            self.engine.check_admits(body.model)  # ``create`` checks again
        return await asyncio.to_thread(build_generation_params, body, rules, request_id_var.get(), None, fetched)

    async def run(self, order: JobOrder, hangup: Callable[[], Awaitable[None]]) -> JobRecord:
        """``submit``, then ``finish``: what a route that answers with the result does."""
        return await self.finish(await self.submit(order), hangup)

    async def finish(self, record: JobRecord, hangup: Callable[[], Awaitable[None]]) -> JobRecord:
        """Wait for the job unless the caller hangs up first (``hangup`` returns when it does):
        then the job is cancelled, which withdraws it from the queue, or (running) drops it from
        its batch. Servers do not cancel a route when its client goes away, so without this a queue
        of abandoned requests would still be generated. A failed job raises its error."""
        finished = asyncio.ensure_future(record.done.wait())
        gone = asyncio.ensure_future(hangup())
        try:
            done, _ = await asyncio.wait((finished, gone), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server stops serving this request
            self.cancel(record)
            raise
        finally:
            for task in (finished, gone):
                task.cancel()
        if finished not in done:
            gone.result()  # re-raises if listening for the hang-up itself failed
            self.cancel(record)
            raise ClientDisconnected()
        if record.status == "failed" and record.error is not None:
            raise record.error
        if record.status != "succeeded":
            raise JobCancelled(record.id)
        return record

    async def enqueue(self, order: JobOrder) -> StoredJob:
        """Resolve the request as ``submit`` does, then put it on the shared queue (not on this
        pod's engine): whichever pod of the model has room takes it. Its seed is fixed now, so a
        pod that takes it again after another died makes the same images."""
        assert self.queue is not None
        body = order.request
        params = await self._resolve(body, admit=False)  # whichever pod takes it checks its own engine
        request = body if body.seed is not None else body.model_copy(update={"seed": params.seeds[0]})
        record = JobRecord(
            order.identity.job_id or new_job_id(), body.model, drop_inputs(params), order.output_format, order.webhook,
            order.key_hash, preview=order.preview, base_url=order.base_url, public_id=order.identity.public_id,
            public_base_url=order.identity.public_base_url, total_steps=params.steps, request=request,
            tenant=order.tenant,
        )
        record.trace_headers = inject_dict({})  # the pod that takes it continues this trace
        job = build_stored_job(record)
        async with self._charged(order, params):
            await self.queue.create(job, ("queued", {}))
        return job

    def create(self, model: str, params: GenerationParams, order: JobOrder) -> JobRecord:
        """Queue resolved parameters as a job. A router's ``order.identity.job_id`` (its signed id
        names it before the pod answers) is refused with 409 when taken: another id would not be
        the one the router handed out."""
        job_id = order.identity.job_id
        if job_id is not None and self.store.is_taken(job_id):
            raise ApiError(f"job id {job_id} is already in use here", 409, "job_id_taken")
        record = JobRecord(
            job_id or new_job_id(), model, params, order.output_format, order.webhook, order.key_hash, order.keep,
            preview=order.preview, base_url=order.base_url, public_id=order.identity.public_id,
            public_base_url=order.identity.public_base_url, total_steps=params.steps, request=order.request,
            durable=order.durable, tenant=order.tenant,
        )
        record.entry = self.engine.submit(model, params, observer=JobEvents(self, record), tenant=order.tenant)
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
        entry = record.entry
        assert entry is not None  # create() queued it before starting this task
        try:
            result = await self.engine.wait(entry)
            record.entry = None
            # Encoding a large PNG takes tens of milliseconds: keep it off the event loop.
            seeds = [i.seed for i in result.images]
            rules = self.models.get(record.model)
            images = self._checked(record, result.images, rules.spec if rules is not None else None)
            stamp = build_job_stamp(record, rules.spec if rules is not None else None, self.signing)
            with span("encode_image", {"tinyimg.format": record.output_format, "tinyimg.images": len(result.images)}):
                encoded = await asyncio.to_thread(finish_images, images, seeds, record.output_format, stamp)
            if self.results is not None and (record.keep or record.durable) and not record.finished:
                with span("store_result", {"tinyimg.images": len(encoded), "tinyimg.job_id": record.id}):
                    encoded, record.image_keys = await store_images(self.results, record, encoded, seeds)
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
        record.images, record.seeds = encoded, seeds
        record.queued_seconds, record.inference_seconds = result.queued_seconds, result.inference_seconds
        record.device, record.batch_size = result.device, result.batch_size
        record.step = max(record.step, record.total_steps)
        self._finish(record, "succeeded", {"images": len(encoded), "seeds": record.seeds})
        if self.results is not None and record.audit is not None:
            try:  # under each image's hash: `tinyimg audit verify` finds the job from the image alone
                await store_audit(self.results, record.audit)
            except StorageUnavailable as err:
                log.warning("audit record not stored: %s", err.message, extra={"job_id": record.id})
        if self.results is not None and record.keep and not record.durable:
            try:  # beside its images, so the job is still there after a restart
                await store_record(self.results, build_stored_job(record))
            except StorageUnavailable as err:
                log.warning("job record not stored: %s", err.message, extra={"job_id": record.id})

    @staticmethod
    def _checked(record: JobRecord, generated: Sequence[GeneratedImage], spec: ModelSpec | None) -> list[Any]:
        """The images as the model's safety policy answers them, their flags on the record;
        ContentBlocked (422) when the policy blocks a flagged one: nothing of it is encoded or kept."""
        images = [g.image for g in generated]
        if spec is None or spec.safety.checker is None or any(g.content_score is None for g in generated):
            return images
        safety, checker = spec.safety, spec.safety.checker
        record.content_flags = [build_flag(cast(float, g.content_score), safety.threshold, checker)
                                for g in generated]
        return apply_policy(record.tenant.safety_policy or safety.policy, images, record.content_flags)

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
        if status != "cancelled":
            record.audit = build_job_audit(record)
            audit_log.info("job %s %s", status, record.id, extra={"audit": record.audit, "job_id": record.id})
        for hook in (self.on_finish, self.deliver_webhook if record.webhook else None):
            if hook is None:
                continue
            try:
                hook(record)
            except Exception:  # a metrics or webhook hook must not lose the job's result
                log.exception("job hook failed", extra={"job_id": record.id})
