"""runtime.acceleration on the real tiny pipelines, on the CPU: every tier loads, warms up and
passes its quality check against the plain pipeline (regional torch.compile included); int8 shrinks
the denoiser; the first-block step cache skips transformer blocks at batch 1 and stays off at
batch 2; a shape outside the warm-up buckets counts as a recompile; a batch that runs out of
memory is answered in halves."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server.conftest import start_live
from tests.support.tiny_models import tiny_config
from tinyimg.core.status import ACCELERATION_QUALITY
from tinyimg.families.base import GenerationParams
from tinyimg.families.flux import FluxHandler
from tinyimg.families.sdxl import SDXLHandler
from tinyimg.runtime.engine import Engine
from tinyimg.spec import ModelSpec

TIERS = {
    # The lossless tier without compile (compile is the live server test below: it takes a while on the CPU).
    "fused-channels-last": {"fuseQkv": True, "channelsLast": True, "compile": "none"},
    "int8": {"quantize": "int8", "compile": "none"},
    "attention-math": {"attention": "_native_math", "compile": "none"},
}


def params(*seeds: int, steps: int = 4, size: int = 64) -> GenerationParams:
    return GenerationParams("a red cube", None, size, size, steps, 0.0, seeds, request_id="req")


def model_spec(tiny_model_dirs, family: str, acceleration: dict, **defaults) -> ModelSpec:
    config = tiny_config(tiny_model_dirs, families=(family,), runtime={"acceleration": acceleration},
                         defaults=defaults)
    return config.models[0]


def loaded(spec: ModelSpec):
    handler = {"flux": FluxHandler, "sdxl": SDXLHandler}[spec.family](spec)
    handler.load("cpu")
    return handler


async def start_engine(config, **options) -> Engine:
    engine = Engine(config, **options)
    await engine.start()
    while any(s.state == "loading" for s in engine.model_states()):
        await asyncio.sleep(0.05)
    return engine


@pytest.mark.parametrize("tier", list(TIERS))
@pytest.mark.parametrize("family", ["sdxl", "flux"])
async def test_each_tier_loads_and_its_image_passes_the_quality_check(tiny_model_dirs, family, tier):
    engine = await start_engine(tiny_config(tiny_model_dirs, families=(family,), runtime={"acceleration": TIERS[tier]}))
    try:
        [state] = engine.model_states()
        assert state.state == "ready", state.reason
        measured = state.warmup.acceleration()
        assert measured["quality"] >= 30.0  # dB PSNR against the plain pipeline, same seed
        assert measured["seconds_per_image"] > 0
        result = await engine.generate(state.name, params(5))
        assert result.images[0].image.size == (64, 64)
        assert engine.status()["models"][state.name]["acceleration"] == measured
    finally:
        await engine.stop()


async def test_a_quality_under_min_quality_fails_the_model_with_acceleration_quality(tiny_model_dirs):
    # int8 never reproduces the plain image exactly; 100 dB (identical) is out of its reach.
    engine = await start_engine(tiny_config(tiny_model_dirs, families=("flux",),
                                            runtime={"acceleration": {"quantize": "int8", "compile": "none",
                                                                                "minQuality": 100}}))
    try:
        [state] = engine.model_states()
        assert state.state == "failed"
        assert state.reason.startswith(f"{ACCELERATION_QUALITY}: the accelerated pipeline's image is")
        assert "minQuality 100.0" in state.reason
        assert engine.readiness()[0] is False
    finally:
        await engine.stop()


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_int8_cuts_the_denoisers_parameter_bytes_by_at_least_40_percent(tiny_model_dirs, family):
    from torchao.utils import get_model_size_in_bytes

    handler = loaded(model_spec(tiny_model_dirs, family, {"quantize": "int8"}))
    denoiser = getattr(handler.pipe, handler.family.denoiser)
    before = get_model_size_in_bytes(denoiser)
    handler.accelerate()
    after = get_model_size_in_bytes(denoiser)
    print(f"\nBENCH int8 {family}: denoiser {before} -> {after} bytes ({1 - after / before:.0%} less)")
    assert after <= 0.6 * before


def test_the_step_cache_skips_transformer_blocks_at_batch_one_and_is_off_at_batch_two(tiny_model_dirs):
    steps = 8
    plain = loaded(model_spec(tiny_model_dirs, "flux", {}))
    cached = loaded(model_spec(tiny_model_dirs, "flux", {"stepCache": {"mode": "first-block", "threshold": 0.5}}))
    cached.accelerate()
    counts = {}
    for name, handler in (("plain", plain), ("cached", cached)):
        calls = [0]
        # Inside the last block: a skipped step never reaches it (the block's own call is replaced by the cache's).
        block = handler.pipe.transformer.single_transformer_blocks[-1].proj_out
        block.register_forward_hook(lambda *_, calls=calls: calls.__setitem__(0, calls[0] + 1))
        handler.generate([params(1, steps=steps)])
        one = calls[0]
        handler.generate([params(1, 2, steps=steps)])
        counts[name] = (one, calls[0] - one)
    print(f"\nBENCH step cache (threshold 0.5, {steps} steps): last-block calls plain {counts['plain']},"
          f" cached {counts['cached']} (batch 1, batch 2)")
    assert counts["plain"] == (steps, steps)
    assert counts["cached"][0] <= 0.7 * steps  # at least 30% fewer at batch 1
    assert counts["cached"][1] == steps  # not used for a batch of two
    assert not cached.pipe.transformer.is_cache_enabled  # turned off by the batch of two


class OutOfMemoryAboveTwo(FluxHandler):
    """The real tiny Flux pipeline; its transformer runs out of memory on more than two images, as a
    GPU's allocator would (no GPU here: torch's own OutOfMemoryError, raised by a forward pre-hook)."""

    calls: list[int] = []

    def load(self, device: str, offload: str = "none") -> None:
        super().load(device, offload)

        def refuse(module, args, kwargs):
            if kwargs["hidden_states"].shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB (injected)")

        self.pipe.transformer.register_forward_pre_hook(refuse, with_kwargs=True)

    def generate(self, batch, *args, **kwargs):
        self.calls.append(sum(len(p.seeds) for p in batch))
        return super().generate(batch, *args, **kwargs)


async def test_a_batch_of_four_that_runs_out_of_memory_answers_all_four(tiny_model_dirs):
    OutOfMemoryAboveTwo.calls = []
    engine = await start_engine(tiny_config(tiny_model_dirs, families=("flux",),
                                            runtime={"maxBatchSize": 4, "maxBatchWaitMs": 2000}),
                                handler_factory=OutOfMemoryAboveTwo)
    try:
        warmup_calls = len(OutOfMemoryAboveTwo.calls)
        results = await asyncio.gather(*(engine.generate("tiny-flux", params(seed)) for seed in range(4)))
        assert [[i.seed for i in r.images] for r in results] == [[0], [1], [2], [3]]
        assert OutOfMemoryAboveTwo.calls[warmup_calls:] == [4, 2, 2]
    finally:
        await engine.stop()


def metric(text: str, name: str, **labels: str) -> float | None:
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())), None)


def test_regional_compile_on_the_cpu_warms_its_buckets_and_counts_a_new_shape_as_a_recompile(tiny_model_dirs):
    lossless = {"compile": "regional", "fuseQkv": True, "channelsLast": True}
    config = tiny_config(tiny_model_dirs, families=("flux",), runtime={
        "acceleration": lossless, "warmupShapes": [{"width": 64, "height": 64, "batch": 1},
                                                   {"width": 64, "height": 64, "batch": 2}]})
    served = start_live(config)
    try:
        url = served.url
        [model] = httpx.get(f"{url}/models").json()["models"]
        assert model["acceleration"]["quality"] >= 30.0 and model["acceleration"]["seconds_per_image"] > 0
        status = httpx.get(f"{url}/status").json()["models"]["tiny-flux"]
        assert set(status["startup"]) == {"download", "load", "compile", "warmup"}
        assert status["startup"]["compile"] > 0 and status["shape_recompiles"] == 0
        body = {"model": "tiny-flux", "prompt": "a red cube", "steps": 2}
        assert httpx.post(f"{url}/generate", json={**body, "num_images": 2}, timeout=300).status_code == 200  # a warmed bucket
        assert httpx.get(f"{url}/status").json()["models"]["tiny-flux"]["shape_recompiles"] == 0
        for _ in range(2):  # a new size: one recompile, once
            assert httpx.post(f"{url}/generate", json={**body, "width": 96, "height": 96}, timeout=300).status_code == 200
        assert httpx.get(f"{url}/status").json()["models"]["tiny-flux"]["shape_recompiles"] == 1
        text = httpx.get(f"{url}/metrics").text
        assert metric(text, "tinyimg_shape_recompiles_total", model="tiny-flux") == 1.0
        assert metric(text, "tinyimg_startup_phase_seconds", model="tiny-flux", phase="compile") == status["startup"]["compile"]
        assert metric(text, "tinyimg_acceleration_quality_psnr", model="tiny-flux") == model["acceleration"]["quality"]
        print(f"\nBENCH regional compile (CPU, tiny Flux): startup {status['startup']}, {model['acceleration']}")
    finally:
        served.server.stop()


def test_a_second_start_takes_the_compiled_kernels_from_the_cache_directory(tiny_model_dirs, tmp_path):
    """What the operator's TORCHINDUCTOR_CACHE_DIR on the cache volume buys a second pod: two fresh
    processes, one cache directory; the second compiles nothing (every FX graph a cache hit)."""
    spec = model_spec(tiny_model_dirs, "flux", {"compile": "regional"}, steps=2)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "tests.support.warm_start", json.dumps(spec.to_wire())],
                              capture_output=True, text=True, env=env, timeout=600, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = (run["inductor"] for run in runs)
    assert first.get("fxgraph_cache_miss", 0) > 0 and not first.get("fxgraph_cache_hit")
    assert second.get("fxgraph_cache_hit") == first["fxgraph_cache_miss"] and not second.get("fxgraph_cache_miss")
    assert runs[0]["quality"] == runs[1]["quality"]
    print(f"\nBENCH compile cache (CPU, tiny Flux, regional): compile phase {runs[0]['phases']['compile']:.1f}s cold,"
          f" {runs[1]['phases']['compile']:.1f}s from the cache directory")
