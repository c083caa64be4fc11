"""Fault injection for the real tiny Flux pipeline, passed to the engine as ``handler_factory``:
generation blocks while ``gate`` is clear (warm-up too; ``entered`` says a call is waiting), some
prompts raise, and every call's prompts are recorded. Everything else is the real handler."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from tinyimg.families.flux import FluxHandler

FAULTS = {
    "explode": lambda: RuntimeError("injected fault"),
    "oom": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory (injected)"),
    "oom-runtime-error": lambda: RuntimeError("CUDA error: out of memory (injected)"),
}


class GatedFluxHandler(FluxHandler):
    gate = threading.Event()
    entered = threading.Event()
    prompts: list[list[str]] = []

    def generate(self, batch, should_stop=None, on_step=None, **hooks):
        self.entered.set()
        self.gate.wait(30)
        self.prompts.append([p.prompt for p in batch])
        fault = FAULTS.get(batch[0].prompt)
        if fault is not None:
            raise fault()
        return super().generate(batch, should_stop, on_step, **hooks)


@pytest.fixture
def gated() -> Iterator[type[GatedFluxHandler]]:
    GatedFluxHandler.gate.set()
    GatedFluxHandler.entered.clear()
    GatedFluxHandler.prompts.clear()
    yield GatedFluxHandler
    GatedFluxHandler.gate.set()


class PacedFluxHandler(FluxHandler):
    """The real tiny Flux pipeline, each denoising step made ``step_seconds`` long, so a test can
    watch a job queue, run step by step and be cancelled mid-way."""

    step_seconds = 0.05
    calls: list[list[str]] = []
    steps_run: list[int] = []  # per pipeline call, the denoising steps it ran

    def generate(self, batch, should_stop=None, on_step=None, **hooks):
        def paced(step: int, total: int) -> None:
            time.sleep(self.step_seconds)
            self.steps_run[-1] = step
            if on_step is not None:
                on_step(step, total)

        self.calls.append([p.prompt for p in batch])
        self.steps_run.append(0)
        return super().generate(batch, should_stop, paced, **hooks)
