"""Samplers, image-to-image and inpainting on the real tiny SDXL and Flux pipelines (loaded from
disk through from_pretrained, on CPU): what a request may vary over one loaded pipeline."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from tests.support.tiny_models import FAMILIES, tiny_config, tiny_model_dirs  # noqa: F401  (fixture)
from tinyimg.families import load_handler_class
from tinyimg.families.base import GenerationParams

STEPS = 2  # enough for every sampler to differ; strength 0.5 still runs one step


@pytest.fixture(scope="module", params=FAMILIES)
def handler(request, tiny_model_dirs):
    spec = tiny_config(tiny_model_dirs, families=(request.param,)).models[0]
    loaded = load_handler_class(request.param)(spec)
    loaded.load("cpu")
    return loaded


def text(handler, seed: int = 1, prompt: str = "a red cube", **fields) -> GenerationParams:
    return GenerationParams(prompt, None, 64, 64, STEPS, handler.family.default_guidance, (seed,), **fields)


def noise_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def img2img(handler, image, strength: float = 0.5, **fields) -> GenerationParams:
    return text(handler, mode="img2img", strength=strength, image=image, **fields)


def inpaint(handler, image, mask, **fields) -> GenerationParams:
    return text(handler, mode="inpaint", strength=1.0, image=image, mask=mask, **fields)


def run(handler, params: GenerationParams) -> np.ndarray:
    [[generated]] = handler.generate([params])
    return np.asarray(generated.image.convert("RGB"), dtype=np.int16)


def test_each_scheduler_runs_and_only_a_different_sampler_changes_the_image(handler):
    # 4 steps: at 2, ancestral Euler's added noise hardly shows through the tiny VAE.
    own = run(handler, replace(text(handler), steps=4))
    own_class = type(handler.scheduler_for(None)).__name__
    assert handler.family.schedulers, "every product family lists at least its own sampler"
    for name, choice in handler.family.schedulers.items():
        image = run(handler, replace(text(handler, scheduler=name), steps=4))
        if choice.class_name == own_class and not choice.overrides:
            # the model's own sampler, rebuilt from its config: the same numbers
            assert np.array_equal(image, own), name
        else:
            assert np.abs(image - own).mean() > 1, name


def test_sdxl_offers_the_six_usual_samplers_and_flux_only_flow_matching(handler):
    expected = {
        "sdxl": ["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc"],
        "flux": ["flow_match_euler"],
    }[handler.spec.family]
    assert list(handler.family.schedulers) == expected
    assert handler.scheduler_for(expected[-1]) is handler.scheduler_for(expected[-1])  # built once, cached


def test_a_requested_scheduler_does_not_stay_for_the_next_request(handler):
    before = run(handler, text(handler, seed=3))
    run(handler, text(handler, seed=3, scheduler=list(handler.family.schedulers)[-1]))
    assert np.array_equal(run(handler, text(handler, seed=3)), before)
    assert handler.pipe.scheduler is handler.scheduler_for(None)


def test_img2img_and_inpaint_share_every_weight_with_the_loaded_pipeline(handler):
    def storage(pipeline) -> dict[str, int]:
        return {
            f"{name}.{param_name}": param.data_ptr()
            for name, module in pipeline.components.items() if hasattr(module, "named_parameters")
            for param_name, param in module.named_parameters()
        }

    loaded = storage(handler.pipe)
    total = sum(p.numel() * p.element_size() for m in handler.pipe.components.values()
                if hasattr(m, "parameters") for p in m.parameters())
    for mode in ("img2img", "inpaint"):
        run(handler, img2img(handler, noise_image(0)) if mode == "img2img"
            else inpaint(handler, noise_image(0), Image.new("L", (64, 64), 255)))
        pipeline = handler.pipeline_for(mode)
        assert type(pipeline).__name__ == handler.family.mode_pipeline_class(mode)
        assert pipeline is not handler.pipe
        assert storage(pipeline) == loaded  # the same tensors: no second copy
    # Parameter memory after using every mode: still one copy of the weights.
    everything = {ptr for mode in ("txt2img", "img2img", "inpaint") for ptr in storage(handler.pipeline_for(mode)).values()}
    assert everything == set(loaded.values()) and total > 0


def test_img2img_gives_the_requested_size_and_identical_pixels_for_the_same_seed_and_input(handler):
    image = noise_image(1, (96, 64))
    params = replace(img2img(handler, image), width=96, height=64)
    [[first]] = handler.generate([params])
    assert first.image.size == (96, 64)
    assert np.array_equal(run(handler, params), np.asarray(first.image, dtype=np.int16))


def test_img2img_strength_and_input_change_the_image(handler):
    base = run(handler, img2img(handler, noise_image(1), strength=0.5))
    assert np.abs(run(handler, img2img(handler, noise_image(1), strength=1.0)) - base).mean() > 1
    assert np.abs(run(handler, img2img(handler, noise_image(2), strength=0.5)) - base).mean() > 1


def test_inpaint_mask_changes_the_image(handler):
    image = noise_image(4)
    everything = Image.new("L", (64, 64), 255)
    half = Image.new("L", (64, 64), 0)
    half.paste(255, (0, 0, 32, 64))
    assert np.abs(run(handler, inpaint(handler, image, everything)) - run(handler, inpaint(handler, image, half))).mean() > 1


def test_an_all_keep_mask_makes_the_prompt_irrelevant(handler):
    """What diffusers promises for a keep region: after every step it puts back the input's own
    (re-noised) latents there, so the final latents are the input's, whatever the prompt asks.
    (The pixels are the VAE's reconstruction of the input, not the input: random weights.)"""
    keep = Image.new("L", (64, 64), 0)
    image = noise_image(5)
    assert np.array_equal(
        run(handler, inpaint(handler, image, keep, prompt="a red cube")),
        run(handler, inpaint(handler, image, keep, prompt="something else entirely")),
    )


def test_a_batch_of_img2img_requests_keeps_each_input_and_matches_each_alone(handler):
    batch = [img2img(handler, noise_image(10), prompt="one"), replace(img2img(handler, noise_image(11), prompt="two"), seeds=(2,))]
    together = [img for request in handler.generate(batch) for img in request]
    for p, t in zip(batch, together, strict=True):
        diff = np.abs(run(handler, p) - np.asarray(t.image, dtype=np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # batched kernels' last-bit rounding
    assert np.abs(np.asarray(together[0].image, dtype=np.int16) - np.asarray(together[1].image, dtype=np.int16)).mean() > 1
