"""On a GPU machine: the tiny pipelines are placed on CUDA in half precision, generate there,
and an out-of-memory request fails alone while the engine keeps serving."""

from __future__ import annotations

import pytest

from tests.support.tiny_models import tiny_config
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.engine import Engine
from tinyimg.runtime.jobs import GenerationFailed

pytestmark = pytest.mark.gpu


def params(seed: int, size: int = 64) -> GenerationParams:
    return GenerationParams("a lighthouse", None, size, size, 2, 0.0, (seed,))


async def started(config) -> Engine:
    engine = Engine(config)
    await engine.start()
    import asyncio

    for _ in range(600):
        ready, _reason = engine.readiness()
        if ready:
            return engine
        await asyncio.sleep(0.1)
    raise AssertionError(engine.readiness()[1])


async def test_tiny_models_run_on_cuda_in_half_precision(tiny_model_dirs):
    config = tiny_config(tiny_model_dirs, dtype="auto", runtime={"device": "cuda", "cpuFallback": False})
    engine = await started(config)
    try:
        for state in engine.model_states():
            assert state.device.startswith("cuda"), state
        result = await engine.generate("tiny-sdxl", params(1))
        assert result.device.startswith("cuda")
        assert result.images[0].image.size == (64, 64)
        assert engine.status()["devices"][0]["kind"] == "cuda"
    finally:
        await engine.stop()


async def test_out_of_memory_fails_one_request_and_the_engine_keeps_serving(tiny_model_dirs):
    import torch

    config = tiny_config(
        tiny_model_dirs, families=("sdxl",), dtype="auto",
        limits={"maxWidth": 8192, "maxHeight": 8192}, runtime={"device": "cuda"},
    )
    engine = await started(config)
    try:
        free, _total = torch.cuda.mem_get_info()
        # A size whose latents and attention cannot fit in the free memory of this GPU.
        side = 8192
        with pytest.raises(GenerationFailed) as err:
            await engine.generate("tiny-sdxl", GenerationParams("x", None, side, side, 1, 0.0, tuple(range(64))))
        assert err.value.code == "out_of_memory", (err.value, free)
        result = await engine.generate("tiny-sdxl", params(2))
        assert result.images[0].image.size == (64, 64)
    finally:
        await engine.stop()
