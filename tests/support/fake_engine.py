"""A stand-in engine for in-process HTTP tests: it implements ``EngineApi`` (mypy checks it, as it
checks the real ``Engine``) and makes images whose colour comes from the seed, without a pipeline.
The real engine with real tiny pipelines is exercised by tests/integration/server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from PIL import Image

from tinyimg.core.status import ModelState
from tinyimg.core.tenants import DEFAULT_TENANT, Tenant
from tinyimg.families.base import GeneratedImage, GenerationParams
from tinyimg.runtime.jobs import (
    EngineApi,
    EngineError,
    EngineStatus,
    GenerationResult,
    Job,
    JobObserver,
    ModelLoad,
    ModelNotFound,
)
from tinyimg.runtime.warmup import WarmupReport
from tinyimg.spec import ModelSpec, ServerConfig


@dataclass
class FakeModelState:
    name: str
    spec: ModelSpec
    state: ModelState = "ready"
    reason: str | None = None
    device: str | None = "cpu"
    offload: str = "none"
    adapter_failures: dict[str, str] = field(default_factory=dict)
    warmup: WarmupReport | None = None


@dataclass
class FakeEngine(EngineApi):
    config: ServerConfig
    fail_with: EngineError | Exception | None = None
    ready: bool = True
    calls: list[tuple[str, GenerationParams]] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)  # whose each submitted request was
    dropped_adapters: list[tuple[str, set[str]]] = field(default_factory=list)
    started: bool = False
    stopped: bool = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def check_admits(self, model: str) -> None:
        if model not in [m.name for m in self.config.models]:
            raise ModelNotFound(model, [m.name for m in self.config.models])

    async def apply_model_spec(self, spec: ModelSpec) -> None:
        self.config = self.config.model_copy(
            update={"models": [spec if m.name == spec.name else m for m in self.config.models]})

    async def drop_adapters(self, model: str, names: set[str]) -> None:
        self.dropped_adapters.append((model, set(names)))

    def submit(self, model: str, params: GenerationParams, timeout: float | None = None,
               observer: JobObserver | None = None, tenant: Tenant = DEFAULT_TENANT) -> Job:
        self.check_admits(model)
        self.tenants.append(tenant.name)
        future: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
        return Job(model, params, timeout if timeout is not None else 60.0, future, observer=observer, tenant=tenant)

    async def wait(self, job: Job) -> GenerationResult:
        """Tells the observer it started and each step, as the real worker does."""
        if self.fail_with is not None:
            raise self.fail_with
        model, params = job.model, job.params
        if job.observer is not None:
            job.observer.started()
            for step in range(1, params.steps + 1):
                job.observer.step(step, params.steps)
        self.calls.append((model, params))
        images = [
            GeneratedImage(Image.new("RGB", (params.width, params.height), (s % 256, s // 256 % 256, 7)), s)
            for s in params.seeds
        ]
        return GenerationResult(images, "cpu", 0.01, 0.02, len(images))

    def cancel(self, job: Job) -> None:
        pass  # wait() finishes at once: nothing to withdraw

    def position(self, job: Job) -> int | None:
        return None  # nothing waits: wait() runs at once

    def listen_queue(self) -> asyncio.Event:
        return asyncio.Event()

    def is_draining(self) -> bool:
        return False

    def readiness(self) -> tuple[bool, str]:
        return (True, "all models ready") if self.ready else (False, "model tiny-sdxl is loading")

    def model_states(self) -> list[FakeModelState]:
        state: ModelState = "ready" if self.ready else "loading"
        return [FakeModelState(m.name, m, state) for m in self.config.models]

    def status(self) -> EngineStatus:
        return EngineStatus(
            uptime_seconds=1.5,
            devices=[{"name": "cpu", "kind": "cpu", "label": "2 cores", "memory_total_bytes": 1000,
                      "memory_used_bytes": 400}],
            models={
                m.name: ModelLoad(device="cpu", devices=["cpu"], queue_depth=0, in_flight=0, served=len(self.calls),
                                  failed=0, generate_seconds=0.0, denoise_steps=0, resident_adapters=[], adapter_events={},
                                  startup={}, acceleration=None, shape_recompiles=0)
                for m in self.config.models
            },
            tenants={},
        )
