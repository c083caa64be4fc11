"""Fault injection for the real tiny Flux pipeline, passed to the engine as ``handler_factory``:
generation blocks while ``gate`` is clear (warm-up too; ``entered`` says a call is waiting), some
prompts raise, and every call's prompts are recorded. Everything else is the real handler."""

from __future__ import annotations

import threading
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

    def generate(self, batch, should_stop=None):
        self.entered.set()
        self.gate.wait(30)
        self.prompts.append([p.prompt for p in batch])
        fault = FAULTS.get(batch[0].prompt)
        if fault is not None:
            raise fault()
        return super().generate(batch, should_stop)


@pytest.fixture
def gated() -> Iterator[type[GatedFluxHandler]]:
    GatedFluxHandler.gate.set()
    GatedFluxHandler.entered.clear()
    GatedFluxHandler.prompts.clear()
    yield GatedFluxHandler
    GatedFluxHandler.gate.set()
