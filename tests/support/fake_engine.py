"""A stand-in Engine for in-process HTTP unit tests (ASGI transport): it honours the Engine
interface and makes images whose colour comes from the seed, without a pipeline. The real engine
with real tiny pipelines is exercised by tests/integration/server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tinyimg.runtime.jobs import EngineError, GeneratedImage, GenerationParams, GenerationResult, ModelNotFound
from tinyimg.spec import ModelSpec, ServerConfig


@dataclass
class FakeModelState:
    name: str
    spec: ModelSpec
    state: str = "ready"
    reason: str = ""
    device: str | None = "cpu"
    offload: str | None = "none"
    adapter_failures: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeEntry:
    model: str
    params: GenerationParams
    observer: Any


@dataclass
class FakeEngine:
    config: ServerConfig
    fail_with: EngineError | Exception | None = None
    ready: bool = True
    calls: list[tuple[str, GenerationParams]] = field(default_factory=list)
    started: bool = False
    stopped: bool = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def check_admits(self, model: str) -> None:
        if model not in [m.name for m in self.config.models]:
            raise ModelNotFound(model, [m.name for m in self.config.models])

    def submit(self, model: str, params: GenerationParams, timeout: float | None = None,
               observer: Any = None) -> FakeEntry:
        self.check_admits(model)
        return FakeEntry(model, params, observer)

    async def wait(self, entry: FakeEntry) -> GenerationResult:
        """Tells the observer it started and each step, as the real worker does."""
        if self.fail_with is not None:
            raise self.fail_with
        model, params = entry.model, entry.params
        if entry.observer is not None:
            entry.observer.started()
            for step in range(1, params.steps + 1):
                entry.observer.step(step, params.steps)
        self.calls.append((model, params))
        images = [
            GeneratedImage(Image.new("RGB", (params.width, params.height), (s % 256, s // 256 % 256, 7)), s)
            for s in params.seeds
        ]
        return GenerationResult(images, "cpu", 0.01, 0.02, len(images))

    async def generate(self, model: str, params: GenerationParams, timeout: float | None = None) -> GenerationResult:
        return await self.wait(self.submit(model, params, timeout))

    def cancel(self, entry: FakeEntry) -> None:
        pass  # wait() finishes at once: nothing to withdraw

    def position(self, entry: FakeEntry) -> int | None:
        return None  # nothing waits: wait() runs at once

    def listen_queue(self) -> asyncio.Event:
        return asyncio.Event()

    def is_draining(self) -> bool:
        return False

    def readiness(self) -> tuple[bool, str]:
        return (True, "all models ready") if self.ready else (False, "model tiny-sdxl is loading")

    def model_states(self) -> list[FakeModelState]:
        state = "ready" if self.ready else "loading"
        return [FakeModelState(m.name, m, state) for m in self.config.models]

    def status(self) -> dict:
        return {
            "uptime_seconds": 1.5,
            "devices": [{"name": "cpu", "kind": "cpu", "label": "2 cores", "memory_total_bytes": 1000,
                         "memory_used_bytes": 400}],
            "models": {
                m.name: {"device": "cpu", "devices": ["cpu"], "queue_depth": 0, "in_flight": 0, "served": len(self.calls), "failed": 0}
                for m in self.config.models
            },
        }
