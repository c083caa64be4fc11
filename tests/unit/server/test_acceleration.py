"""runtime.acceleration: validation per family (schema), resolution per device, what a device
refuses, and the PSNR the warm-up's quality check uses."""

from __future__ import annotations

import pytest
from PIL import Image
from pydantic import ValidationError

from tinyimg.families.acceleration import (
    Acceleration,
    AccelerationError,
    check_device,
    measure_psnr,
    resolve_acceleration,
)
from tinyimg.runtime.warmup import build_shape_request, build_warmup_shapes
from tinyimg.spec import ATTENTION_BACKENDS, ModelSpec


def spec(family: str, acceleration: dict | None = None, **runtime) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "family": family, "source": "/models/m",
                                     "runtime": {"acceleration": acceleration or {}, **runtime}})


ACCEPTED, REFUSED = None, "refused"
CASES = [
    # (acceleration, sdxl, flux): None accepted, else a piece of the error
    ({"compile": "none"}, ACCEPTED, ACCEPTED),
    ({"compile": "regional"}, ACCEPTED, ACCEPTED),
    ({"compile": "full"}, ACCEPTED, ACCEPTED),
    ({"compile": "partial"}, "compile", "compile"),
    ({"fuseQkv": True}, ACCEPTED, ACCEPTED),
    ({"fuseQkv": "yes please"}, "fuseQkv", "fuseQkv"),
    ({"channelsLast": True}, ACCEPTED, ACCEPTED),
    ({"quantize": "int8"}, ACCEPTED, ACCEPTED),
    ({"quantize": "fp8"}, ACCEPTED, ACCEPTED),  # compile unset: regional on the GPU fp8 needs
    ({"quantize": "fp8", "compile": "none"}, "quantize fp8 needs compile", "quantize fp8 needs compile"),
    ({"quantize": "int4"}, "quantize", "quantize"),
    ({"attention": "flash"}, ACCEPTED, ACCEPTED),
    ({"attention": "_native_math"}, ACCEPTED, ACCEPTED),
    ({"attention": "fastest"}, "unknown attention backend 'fastest'", "unknown attention backend 'fastest'"),
    ({"stepCache": {"mode": "first-block"}}, "stepCache: first-block caches transformer blocks; family 'sdxl'", ACCEPTED),
    ({"stepCache": {"mode": "first-block", "threshold": 0.5}}, "transformer", ACCEPTED),
    ({"stepCache": {"mode": "first-block", "threshold": 0}}, "threshold", "threshold"),
    ({"stepCache": {"mode": "teacache"}}, "mode", "mode"),
    ({"minQuality": 25}, ACCEPTED, ACCEPTED),
    ({"minQuality": -1}, "minQuality", "minQuality"),
    ({"turbo": True}, "turbo", "turbo"),
]


@pytest.mark.parametrize(("acceleration", "sdxl", "flux"), CASES, ids=[str(c[0]) for c in CASES])
def test_every_acceleration_field_is_checked_per_family(acceleration, sdxl, flux):
    for family, expected in (("sdxl", sdxl), ("flux", flux)):
        if expected is None:
            assert spec(family, acceleration).runtime.acceleration is not None
        else:
            with pytest.raises(ValidationError) as refused:
                spec(family, acceleration)
            assert expected in str(refused.value), (family, str(refused.value))


@pytest.mark.parametrize(("shapes", "error"), [
    ([{"width": 64, "height": 64, "batch": 2}], None),
    ([{"width": 60, "height": 64}], "runtime.warmupShapes[0].width 60 must be a multiple of"),
    ([{"width": 64, "height": 4096}], "runtime.warmupShapes[0].height 4096"),
    ([{"width": 64, "height": 64, "batch": 8}], "runtime.warmupShapes[0].batch 8 is over runtime.maxBatchSize 4"),
])
def test_warmup_shapes_must_be_sizes_the_model_makes(shapes, error):
    if error is None:
        assert build_warmup_shapes(spec("flux", warmupShapes=shapes)) == [(64, 64, 2)]
    else:
        with pytest.raises(ValidationError, match=error.replace("[", r"\[").replace("]", r"\]")):
            spec("flux", warmupShapes=shapes)


def test_unset_warmup_shapes_are_the_default_size_at_batch_one_and_every_batch_size_when_compiled():
    model = spec("flux")
    d = model.resolved_defaults()
    assert build_warmup_shapes(model) == [(d.width, d.height, 1)]
    assert build_warmup_shapes(model, compiled=True) == [(d.width, d.height, b) for b in (1, 2, 3, 4)]
    request = build_shape_request(model, (64, 128, 3))
    assert (request.width, request.height, request.steps, request.seeds) == (64, 128, 1, (0, 1, 2))


def test_unset_fields_take_the_lossless_tier_on_a_gpu_and_full_compile_on_the_cpu():
    model = spec("sdxl")
    assert resolve_acceleration(model, "cuda") == Acceleration("regional", True, True, "none", "sdpa", "none", 0.08, 30.0)
    assert resolve_acceleration(model, "cpu") == Acceleration("full", False, False, "none", "sdpa", "none", 0.08, 30.0)


@pytest.mark.parametrize("adapters", [
    {"adapters": [{"name": "style", "source": "org/style-lora"}]},
    {"adapterSources": {"allowedHosts": ["huggingface.co"]}},
])
def test_a_model_taking_lora_adapters_is_not_compiled_unless_it_asks(adapters):
    # Every new set of adapters or scales would recompile the compiled graphs.
    def with_adapters(acceleration=None) -> ModelSpec:
        return ModelSpec.model_validate({"name": "m", "family": "flux", "source": "/models/m", **adapters,
                                         "runtime": {"acceleration": acceleration or {}}})

    assert resolve_acceleration(with_adapters(), "cuda").compile == "none"
    assert resolve_acceleration(with_adapters(), "cpu").plain
    assert resolve_acceleration(with_adapters({"compile": "regional"}), "cuda").compile == "regional"


def test_without_a_compiler_the_default_is_uncompiled_and_an_asked_compile_is_refused():
    assert resolve_acceleration(spec("flux"), "cpu", compiler=False).compile == "none"
    asked = resolve_acceleration(spec("flux", {"compile": "regional"}), "cpu", compiler=False)
    with pytest.raises(AccelerationError, match="compile regional needs a C compiler on PATH"):
        check_device(asked, "cpu", None, compiler=False)


def test_set_fields_win_over_the_device_defaults_and_the_old_compile_flag_means_full():
    model = spec("flux", {"compile": "none", "fuseQkv": False, "stepCache": {"mode": "first-block", "threshold": 0.3}})
    resolved = resolve_acceleration(model, "cuda")
    assert (resolved.compile, resolved.fuse_qkv, resolved.channels_last, resolved.step_cache, resolved.threshold) == (
        "none", False, True, "first-block", 0.3)
    assert resolve_acceleration(spec("flux", compile=True), "cpu").compile == "full"
    assert resolve_acceleration(spec("flux", {"compile": "regional"}, compile=True), "cpu").compile == "regional"


@pytest.mark.parametrize(("capability", "refused"), [(None, "this replica runs on the CPU"),
                                                     ((8, 0), "cuda:0 (compute capability 8.0)"),
                                                     ((8, 9), None), ((9, 0), None)])
def test_fp8_needs_a_gpu_with_fp8_tensor_cores(capability, refused):
    fp8 = resolve_acceleration(spec("flux", {"quantize": "fp8"}), "cuda")
    device = "cpu" if capability is None else "cuda:0"
    if refused is None:
        check_device(fp8, device, capability)
    else:
        with pytest.raises(AccelerationError, match=r"fp8 needs a GPU with compute capability 8\.9") as err:
            check_device(fp8, device, capability)
        assert refused in str(err.value)


def test_the_attention_backends_the_schema_lists_are_diffusers_own():
    from diffusers.models.attention_dispatch import AttentionBackendName

    assert set(ATTENTION_BACKENDS) - {"sdpa"} <= {b.value for b in AttentionBackendName}


def test_psnr_of_identical_images_is_the_cap_and_of_a_known_difference_its_value():
    gray = Image.new("RGB", (8, 8), (100, 100, 100))
    assert measure_psnr(gray, gray.copy()) == 100.0
    # Every channel off by 10: MSE 100, PSNR = 10 log10(255² / 100) = 28.13 dB.
    assert measure_psnr(gray, Image.new("RGB", (8, 8), (110, 110, 110))) == pytest.approx(28.131, abs=1e-3)
