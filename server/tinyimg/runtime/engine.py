"""The engine: everything the HTTP layer calls. It lives in the server's event loop.

``start()`` returns at once; a background task discovers devices, places the models (one replica
per GPU a model asks for), and loads and warms each replica on its device's thread.
``generate()`` puts a request in the engine's one queue, where whichever device holding a replica
of its model is free takes it, and waits for its batch. A model that cannot be placed or loaded is
"failed" with a reason; the others still serve. ``drain()`` is the SIGTERM sequence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tinyimg.core.drain import DrainTiming, build_drain_timing
from tinyimg.core.errors import InvalidField
from tinyimg.core.status import ModelState
from tinyimg.core.tenants import DEFAULT_TENANT, Tenant
from tinyimg.core.tracing import current_context
from tinyimg.families import load_handler_class
from tinyimg.families.acceleration import AccelerationError
from tinyimg.families.base import GenerationParams, Handler
from tinyimg.families.variants import ADAPTER_EVENTS
from tinyimg.runtime.devices import Device, discover_devices, read_device_status
from tinyimg.runtime.jobqueue import JobQueue, QueueSettings
from tinyimg.runtime.jobs import (
    DeadlineExceeded,
    Draining,
    EngineApi,
    EngineError,
    EngineStatus,
    GenerationResult,
    Job,
    JobObserver,
    ModelLoad,
    ModelNotFound,
    ModelNotReady,
    ResidentAdapter,
)
from tinyimg.runtime.placement import Placement, place
from tinyimg.runtime.preload import MARKER_ENV, wait_for_preload
from tinyimg.runtime.warmup import WarmupReport, warm_up
from tinyimg.runtime.worker import DeviceWorker
from tinyimg.spec import ModelSpec, ServerConfig

log = logging.getLogger("tinyimg.engine")

StateCallback = Callable[[str, str, str | None], None]  # model, state, reason
BatchCallback = Callable[[str, int, float], None]


@dataclass
class ModelEntry:
    """One model as the engine holds it (a ``ModelView``)."""

    name: str
    spec: ModelSpec
    state: ModelState
    reason: str | None = None
    device: str | None = None  # the first replica's
    offload: str = "none"
    devices: list[str] = field(default_factory=list)  # one replica per device, all fed by one queue
    adapter_failures: dict[str, str] = field(default_factory=dict)  # adapter -> why it did not load
    warmup: WarmupReport | None = None  # the first loaded replica's: startup phases, speed, quality


def build_queue_settings(spec: ModelSpec) -> QueueSettings:
    r = spec.runtime
    return QueueSettings(r.queue_size, r.max_batch_size, r.max_batch_wait_ms / 1000)


def build_handler(spec: ModelSpec) -> Handler:
    return load_handler_class(spec.family)(spec)


class Engine(EngineApi):
    def __init__(
        self,
        config: ServerConfig,
        *,
        devices: list[Device] | None = None,
        on_batch: BatchCallback | None = None,
        on_state: StateCallback | None = None,
        handler_factory: Callable[[ModelSpec], Handler] = build_handler,
        stop_grace_seconds: float = 30.0,
    ):
        self.config = config
        self._given_devices = devices
        self.devices: list[Device] = []
        self._on_batch = on_batch
        self._on_state = on_state
        self._handler_factory = handler_factory
        self._stop_grace = stop_grace_seconds
        self._states = {m.name: ModelEntry(m.name, m, "loading") for m in config.models}
        self._queue = JobQueue({m.name: build_queue_settings(m) for m in config.models})
        self._workers: dict[str, DeviceWorker] = {}
        self._loads_left: dict[str, int] = {}  # model -> replicas still loading
        self._load_errors: dict[str, list[str]] = {}
        self._served = {m.name: 0 for m in config.models}
        # Per model, ever: pipeline seconds and denoising steps of the answered requests (their
        # ratio is the model's time per step, which a canary rollout compares across revisions).
        self._generating = {m.name: 0.0 for m in config.models}
        self._steps = {m.name: 0 for m in config.models}
        self._failed = {m.name: 0 for m in config.models}
        self._started = time.monotonic()
        self._boot_task: asyncio.Task[None] | None = None
        self._preloaded: dict[str, float] = {}  # model -> seconds waited for its cache's preload Job
        self._draining = False  # readiness says 503; requests are still taken (the preStop window)
        self._stopping = False  # new requests are refused
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._started = time.monotonic()
        for state in self._states.values():
            self._notify(state)
        self._boot_task = asyncio.get_running_loop().create_task(self._boot(), name="engine-boot")

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new requests, fail queued ones, let running batches finish within ``grace``
        seconds (the constructor's ``stop_grace_seconds`` by default). Safe to call twice."""
        self._stopping = True
        if self._stopped:
            return
        self._stopped = True
        if self._boot_task is not None and not self._boot_task.done():
            self._boot_task.cancel()
        grace = self._stop_grace if grace is None else grace
        for worker in self._workers.values():
            await worker.stop(lambda job: Draining(job.model, "left unfinished"), grace)

    def build_drain_timing(self) -> DrainTiming:
        return build_drain_timing(m.runtime.request_timeout_seconds for m in self.config.models)

    async def drain(self, timing: DrainTiming | None = None) -> bool:
        """The shutdown sequence (on SIGTERM). Readiness turns 503 at once, but requests are still
        taken for ``prestop_seconds`` (Kubernetes endpoints and routers take that long to stop
        sending); then new requests are refused with 503 ``draining``, and queued and running
        work has ``drain_seconds`` to finish. What is left then fails with 503 ``draining``.
        True when nothing was left."""
        timing = timing or self.build_drain_timing()
        self._draining = True
        log.info("draining", extra={"prestop_seconds": timing.prestop_seconds, "drain_seconds": timing.drain_seconds})
        await asyncio.sleep(timing.prestop_seconds)
        self._stopping = True
        finished = await self._wait_idle(timing.drain_seconds)
        left = {name: m["queue_depth"] + m["in_flight"] for name, m in self.status()["models"].items()}
        log.info("drained" if finished else "drain time is up; failing what is left", extra={"left": left})
        await self.stop(grace=0.0)
        return finished

    async def _wait_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self._queue.pending or any(w.running for w in self._workers.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _boot(self) -> None:
        try:
            await self._place_and_load()
        except Exception as err:  # a bug or an unreadable device/weights: say so instead of hanging in "loading"
            log.exception("engine start failed")
            for state in self._states.values():
                if state.state == "loading":
                    self._set_state(state.name, "failed", f"engine start failed: {type(err).__name__}: {err}")

    async def _place_and_load(self) -> None:
        await self._wait_for_preloads()
        devices, estimates, unmeasured = await asyncio.to_thread(self._survey)
        self.devices = devices
        for name, reason in unmeasured.items():
            self._set_state(name, "failed", reason)
        plan = place(estimates, devices)
        for name, reason in plan.failures.items():
            self._set_state(name, "failed", f"cannot be placed: {reason}")
        by_device: dict[str, list[tuple[ModelSpec, Placement]]] = {}
        for spec in self.config.models:
            replicas = plan.placements.get(spec.name, [])
            if replicas:
                state = self._states[spec.name]
                state.device, state.offload = replicas[0].device, replicas[0].offload
                state.devices = [p.device for p in replicas]
                self._loads_left[spec.name] = len(replicas)
            for placement in replicas:
                by_device.setdefault(placement.device, []).append((spec, placement))
        for device in by_device:
            worker = DeviceWorker(device, self._queue, self._on_batch)
            worker.start()
            self._workers[device] = worker
        await asyncio.gather(*(self._load_device(d, entries) for d, entries in by_device.items()))

    async def _wait_for_preloads(self) -> None:
        """With ``TINYIMG_PRELOAD_MARKER`` (the operator's pods of a ``cache.preload`` model): wait
        until the loader Job's marker names each such model's revision (tinyimg.runtime.preload)."""
        directory = os.environ.get(MARKER_ENV)
        if not directory:
            return
        for spec in self.config.models:
            if spec.cache.preload:
                waited = await asyncio.to_thread(wait_for_preload, Path(directory) / f"{spec.name}.json",
                                                 spec.weight_revision())
                self._preloaded[spec.name] = round(waited, 3)
                log.info("the cache is preloaded", extra={"model": spec.name, "waited_seconds": round(waited, 3)})

    def _survey(self) -> tuple[list[Device], list[tuple[ModelSpec, float]], dict[str, str]]:
        """Devices, each model's memory estimate, and why a model could not be estimated."""
        devices = self._given_devices if self._given_devices is not None else discover_devices()
        estimates, unmeasured = [], {}
        for spec in self.config.models:
            try:
                estimate = load_handler_class(spec.family).estimate_memory_gb(spec)
            except FileNotFoundError as err:  # a local directory that is not there: said as it is
                unmeasured[spec.name] = f"{type(err).__name__}: {err}"
                continue
            except Exception as err:  # e.g. a truncated weight file: that model fails, not the server
                unmeasured[spec.name] = f"cannot estimate its memory: {type(err).__name__}: {err}"
                continue
            estimates.append((spec, estimate))
            log.info("memory estimate", extra={"model": spec.name, "estimate_gb": estimate})
        return devices, estimates, unmeasured

    async def _load_device(self, device: str, entries: list[tuple[ModelSpec, Placement]]) -> None:
        """Models sharing a device load one after another, on that device's thread."""
        worker = self._workers[device]
        for spec, placement in entries:
            log.info(
                "loading model",
                extra={"model": spec.name, "device": device, "offload": placement.offload, "why": placement.why},
            )
            start = time.monotonic()
            try:
                handler, report = await worker.call(self._load_and_warm, spec, placement)
                worker.add(spec.name, handler, report.shapes if handler.acceleration.compile != "none" else None)
                self._states[spec.name].adapter_failures.update(getattr(handler, "adapter_failures", {}))
            except AccelerationError as err:  # the model's own setting: the reason as it is
                log.error("model failed to load", extra={"model": spec.name, "device": device, "error": str(err)})
                self._load_errors.setdefault(spec.name, []).append(str(err))
            except Exception as err:
                log.exception("model failed to load", extra={"model": spec.name, "device": device})
                self._load_errors.setdefault(spec.name, []).append(f"{type(err).__name__}: {err}")
            else:
                state = self._states[spec.name]
                if state.warmup is None:  # the first replica's figures speak for the model
                    state.warmup = report
                    if spec.name in self._preloaded:
                        report.phases = {"preload": self._preloaded[spec.name], **report.phases}
                log.info("model loaded", extra={"model": spec.name, "device": device, "phases": report.phases,
                                                "seconds": round(time.monotonic() - start, 3)})
            self._replica_loaded(spec.name)

    def _replica_loaded(self, name: str) -> None:
        """Once every replica of a model has loaded or failed: ready on the devices that loaded it,
        failed (with the first error) when none did."""
        self._loads_left[name] -= 1
        if self._loads_left[name]:
            return
        state = self._states[name]
        loaded = [d for d in state.devices if name in self._workers[d].handlers]
        errors = self._load_errors.get(name, [])
        if not loaded:
            self._set_state(name, "failed", errors[0])
            return
        if errors:
            log.error("some replicas failed to load; serving with the others",
                      extra={"model": name, "devices": loaded, "errors": errors})
        state.devices, state.device = loaded, loaded[0]
        log.info("model ready", extra={"model": name, "devices": loaded})
        self._set_state(name, "ready")

    def _load_and_warm(self, spec: ModelSpec, placement: Placement) -> tuple[Handler, WarmupReport]:
        handler = self._handler_factory(spec)
        handler.load(placement.device, placement.offload)
        return handler, warm_up(handler)

    def _set_state(self, name: str, state: ModelState, reason: str | None = None) -> None:
        entry = self._states[name]
        entry.state, entry.reason = state, reason
        if state == "failed":
            log.error("model failed", extra={"model": name, "reason": reason})
        self._notify(entry)

    def _notify(self, entry: ModelEntry) -> None:
        if self._on_state is not None:
            self._on_state(entry.name, entry.state, entry.reason)

    # -- requests ---------------------------------------------------------------------------
    async def generate(
        self, model: str, params: GenerationParams, timeout: float | None = None,
        observer: JobObserver | None = None,
    ) -> GenerationResult:
        return await self.wait(self.submit(model, params, timeout, observer))

    async def apply_model_spec(self, spec: ModelSpec) -> None:
        """New live settings of a model (``tinyimg.runtime.reload``: defaults, limits, adapters,
        batching, queue, deadline). Adapters are loaded and dropped on each replica's device thread
        between batches; then the next batch, request and ``/models`` use the new settings. The
        running batch finishes as it started."""
        state = self._states[spec.name]
        if spec.adapters != state.spec.adapters:
            failures: dict[str, str] = {}
            for device in state.devices:
                handler = self._workers[device].handlers.get(spec.name)
                if handler is not None:
                    failures.update(await self._workers[device].call(handler.sync_adapters, spec.adapters))
            state.adapter_failures = failures
        state.spec = spec
        self._queue.settings[spec.name] = build_queue_settings(spec)
        self.config = self.config.model_copy(
            update={"models": [spec if m.name == spec.name else m for m in self.config.models]})
        self._queue.touch()  # workers gathering a batch decide again with the new bounds

    async def drop_adapters(self, model: str, names: set[str]) -> None:
        """Run-time adapters deleted from every replica's pipeline (between batches)."""
        state = self._states[model]
        for device in state.devices:
            handler = self._workers[device].handlers.get(model)
            if handler is not None:
                await self._workers[device].call(handler.drop_adapters, names)

    def _adapter_status(self, name: str, devices: list[str]) -> tuple[list[ResidentAdapter], dict[str, int]]:
        """The run-time adapters resident on the model's replicas, and what happened to them."""
        resident: dict[str, ResidentAdapter] = {}
        events = dict.fromkeys(ADAPTER_EVENTS, 0)
        for device in devices:
            handler = self._workers[device].handlers.get(name) if device in self._workers else None
            if handler is None:
                continue
            for file in getattr(handler, "resident_view", ()):  # a stand-in handler may hold none
                entry = resident.setdefault(file.sha256, ResidentAdapter(sha256=file.sha256, label=file.label, devices=[]))
                entry["devices"].append(device)
            for kind, count in getattr(handler, "adapter_events", {}).items():
                events[kind] += count
        return list(resident.values()), events

    def check_admits(self, model: str) -> None:
        """Refuse now what ``submit`` would refuse whatever the request (unknown model, draining,
        not ready, queue full): a request with an input image is checked before it is decoded,
        so a refusal costs no decoding."""
        self._admitting_state(model)
        self._queue.check_room(model)

    def _admitting_state(self, model: str) -> ModelEntry:
        state = self._states.get(model)
        if state is None:
            raise ModelNotFound(model, list(self._states))
        if self._stopping:
            raise Draining(model)
        if state.state == "loading":
            raise ModelNotReady(model, "still loading")
        if state.state == "failed":
            raise ModelNotReady(model, f"failed: {state.reason}", retry_after=60.0)
        return state

    def submit(
        self, model: str, params: GenerationParams, timeout: float | None = None,
        observer: JobObserver | None = None, tenant: Tenant = DEFAULT_TENANT,
    ) -> Job:
        """Queue a request, or refuse it now (unknown model, not ready, draining, queue full)."""
        state = self._admitting_state(model)
        failed_adapters = [name for name, _ in params.loras if name in state.adapter_failures]
        if failed_adapters:
            name = failed_adapters[0]
            raise InvalidField("loras", f"adapter {name!r} failed to load: {state.adapter_failures[name]}")
        spec = state.spec
        timeout = timeout if timeout is not None else spec.runtime.request_timeout_seconds
        job = Job(model, params, timeout, asyncio.get_running_loop().create_future(), observer=observer, tenant=tenant,
                  trace=current_context())
        self._queue.submit(job)
        return job

    async def wait(self, job: Job) -> GenerationResult:
        """A submitted request's result, within its deadline. Cancelling the wait withdraws it
        from the queue, or (running) lets the batch skip its remaining steps once no caller of
        the batch is left; batch mates still get their images."""
        model = job.model
        try:
            result = await asyncio.wait_for(job.future, max(0.0, job.deadline - time.monotonic()))
        except TimeoutError:
            self._queue.withdraw(job)
            self._failed[model] += 1
            where = "waiting in the queue" if job.started_at is None else "generating"
            raise DeadlineExceeded(job.timeout, where) from None
        except EngineError:
            self._failed[model] += 1
            raise
        except asyncio.CancelledError:
            self._queue.withdraw(job)
            raise
        self._served[model] += 1
        self._generating[model] += result.inference_seconds
        self._steps[model] += job.params.steps
        return result

    def cancel(self, job: Job) -> None:
        """Now: a queued request leaves the queue; a running one is dropped from its batch (the
        batch stops at its next step when no one else waits for it). Its waiter gets CancelledError."""
        self._queue.withdraw(job)
        job.future.cancel()

    def position(self, job: Job) -> int | None:
        """1 for the next of its model's waiting requests to run; None once it left the queue."""
        waiting = self._queue.for_models((job.model,))
        return waiting.index(job) + 1 if job in waiting else None

    def listen_queue(self) -> asyncio.Event:
        """An event set whenever the queue changes (positions move)."""
        return self._queue.listen()

    # -- introspection ----------------------------------------------------------------------
    def is_draining(self) -> bool:
        return self._draining or self._stopping

    def readiness(self) -> tuple[bool, str]:
        if self.is_draining():
            return False, "draining"
        states = list(self._states.values())
        failed = [s for s in states if s.state == "failed"]
        if failed:
            return False, "; ".join(f"{s.name} failed: {s.reason}" for s in failed)
        loading = [s.name for s in states if s.state == "loading"]
        if loading:
            return False, f"loading {', '.join(loading)}"
        return True, "all models ready"

    def model_states(self) -> list[ModelEntry]:
        return list(self._states.values())

    def status(self) -> EngineStatus:
        devices = [read_device_status(device) for device in self.devices]
        models = {}
        for name, state in self._states.items():
            resident, events = self._adapter_status(name, state.devices)
            models[name] = ModelLoad(
                device=state.device, devices=list(state.devices), queue_depth=self._queue.depth(name),
                in_flight=sum(w.in_flight(name) for w in self._workers.values()),
                served=self._served[name], failed=self._failed[name],
                generate_seconds=round(self._generating[name], 6), denoise_steps=self._steps[name],
                resident_adapters=resident, adapter_events=events,
                startup=dict(state.warmup.phases) if state.warmup else {},
                acceleration=state.warmup.acceleration() if state.warmup else None,
                shape_recompiles=sum(w.recompiles.get(name, 0) for w in self._workers.values()),
            )
        return EngineStatus(uptime_seconds=time.monotonic() - self._started, devices=devices, models=models,
                            tenants=self._queue.tenant_load())
