"""LoRA adapters on the real tiny pipelines: built by ``tinyimg make-tiny-lora``, loaded with the
model through diffusers' load_lora_weights (peft), active only for the request that names them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.support.adapters import make_lora
from tests.support.tiny_models import FAMILIES, tiny_config, tiny_model_dirs  # noqa: F401  (fixture)
from tinyimg.api.info import build_model_info
from tinyimg.cli import main as tinyimg
from tinyimg.core.errors import InvalidField
from tinyimg.families import load_handler_class
from tinyimg.families.base import AdapterFile, GenerationParams
from tinyimg.runtime.adapters import build_adapter_name
from tinyimg.runtime.engine import Engine

ADAPTERS = [
    {"name": "tiny", "source": "<made by make-tiny-lora>", "scale": 0.8},
    {"name": "broken", "source": "/nonexistent/lora"},
]


@pytest.fixture(scope="module")
def lora_dirs(tmp_path_factory):
    dirs = {}
    for family in FAMILIES:
        dirs[family] = tmp_path_factory.mktemp("loras") / family
        assert tinyimg(["make-tiny-lora", "--family", family, "--out", str(dirs[family])]) == 0
    return dirs


def config_with_adapters(tiny_model_dirs, lora_dirs, family: str):
    adapters = [{**ADAPTERS[0], "source": str(lora_dirs[family])}, ADAPTERS[1]]
    return tiny_config(tiny_model_dirs, families=(family,), adapters=adapters)


@pytest.fixture(scope="module", params=FAMILIES)
def handler(request, tiny_model_dirs, lora_dirs):
    spec = config_with_adapters(tiny_model_dirs, lora_dirs, request.param).models[0]
    loaded = load_handler_class(request.param)(spec)
    loaded.load("cpu")
    return loaded


def run(handler, loras=(), seed: int = 1) -> np.ndarray:
    params = GenerationParams("a red cube", None, 64, 64, 2, handler.family.default_guidance, (seed,), loras=loras)
    [[generated]] = handler.generate([params])
    return np.asarray(generated.image.convert("RGB"), dtype=np.int16)


def test_a_failing_adapter_fails_alone_with_its_reason(handler):
    assert handler.loaded_adapters == ["tiny"]
    assert list(handler.adapter_failures) == ["broken"]
    assert "does not exist" in handler.adapter_failures["broken"]


def test_scale_zero_equals_no_adapter_and_scale_one_differs(handler):
    plain = run(handler)
    assert np.array_equal(run(handler, (("tiny", 0.0),)), plain)
    assert np.abs(run(handler, (("tiny", 1.0),)) - plain).mean() > 1


def test_scales_change_the_image_and_nothing_leaks_into_the_next_call(handler):
    plain = run(handler, seed=4)
    half, full = run(handler, (("tiny", 0.5),), seed=4), run(handler, (("tiny", 1.0),), seed=4)
    assert np.abs(half - full).mean() > 0.5
    assert np.array_equal(run(handler, seed=4), plain)  # the adapter is off again
    assert np.array_equal(run(handler, (("tiny", 0.5),), seed=4), half)  # and its scale is the asked one


def test_the_engine_reports_adapter_states_and_refuses_a_failed_one(tiny_model_dirs, lora_dirs):
    family = FAMILIES[0]

    async def scenario():
        engine = Engine(config_with_adapters(tiny_model_dirs, lora_dirs, family))
        await engine.start()
        try:
            while engine.readiness()[1].startswith("loading"):
                await asyncio.sleep(0.05)
            [state] = engine.model_states()
            info = build_model_info(state, show_local_source=False)
            with pytest.raises(InvalidField) as caught:
                await engine.generate(state.name, GenerationParams(
                    "x", None, 64, 64, 1, 0.0, (1,), loras=(("broken", 1.0),)))
            served = await engine.generate(state.name, GenerationParams(
                "x", None, 64, 64, 1, 0.0, (1,), loras=(("tiny", 1.0),)))
            return state.state, info, caught.value, served
        finally:
            await engine.stop()

    model_state, info, refusal, served = asyncio.run(scenario())
    assert model_state == "ready"  # the broken adapter does not fail its model
    adapters = {a.name: a for a in info.adapters}
    assert (adapters["tiny"].state, adapters["tiny"].scale, adapters["tiny"].reason) == ("ready", 0.8, None)
    assert adapters["broken"].state == "failed" and "does not exist" in adapters["broken"].reason
    assert refusal.field == "loras" and "failed to load" in refusal.reason
    assert served.images[0].image.size == (64, 64)


@pytest.mark.parametrize("family", FAMILIES)
def test_run_time_adapters_swap_within_the_resident_bound_and_leave_no_layers_behind(family, tiny_model_dirs, tmp_path):
    """maxResidentAdapters 1: A, B, A, ... 50 times. A's image each time equals its first, the
    pipeline holds the declared adapter and one run-time adapter, and its parameter count is the
    same after every A (nothing accumulates)."""
    spec = tiny_config(tiny_model_dirs, families=(family,), runtime={"maxResidentAdapters": 1}).models[0]
    handler = load_handler_class(family)(spec)
    handler.load("cpu")
    files = []
    for seed in (31, 32):
        lora = make_lora(tmp_path / str(seed), family, seed)
        files.append(AdapterFile(build_adapter_name(lora.sha256), str(lora.path), lora.sha256, f"lora-{seed}"))
    denoiser = getattr(handler.pipe, handler.family.denoiser)

    def run_with(file: AdapterFile) -> np.ndarray:
        params = GenerationParams("a red cube", None, 64, 64, 2, handler.family.default_guidance, (3,),
                                  loras=((file.name, 1.0),), adapter_files=(file,))
        [[generated]] = handler.generate([params])
        return np.asarray(generated.image.convert("RGB"), dtype=np.int16)

    first_a = run_with(files[0])
    parameters = sum(p.numel() for p in denoiser.parameters())
    first_b = run_with(files[1])
    assert np.abs(first_a - first_b).mean() > 0.5
    for _ in range(50):
        assert np.array_equal(run_with(files[1]), first_b)
        assert np.array_equal(run_with(files[0]), first_a)
        assert sum(p.numel() for p in denoiser.parameters()) == parameters
    held = {name for names in handler.pipe.get_list_adapters().values() for name in names}
    assert held == {files[0].name}
    assert [f.name for f in handler.resident_view] == [files[0].name]
    # A, B, then B again (a hit), A, and 49 more of B, A: each a load after an eviction.
    assert handler.adapter_events == {"loads": 101, "hits": 1, "evictions": 100, "failures": 0}
    assert np.array_equal(run_with(files[0]), first_a)
    assert handler.adapter_events["hits"] == 2
