"""The sdxl and flux handlers on real tiny pipelines, loaded from disk through from_pretrained, on CPU."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from tests.support.tiny_models import tiny_config
from tinyimg.families import load_handler_class
from tinyimg.runtime.jobs import GenerationParams

FAMILY_GUIDANCE = {"sdxl": 5.0, "flux": 0.0}


@pytest.fixture(scope="module", params=["sdxl", "flux"])
def handler(request, tiny_model_dirs):
    family = request.param
    spec = tiny_config(tiny_model_dirs, families=(family,)).models[0]
    loaded = load_handler_class(family)(spec)
    loaded.load("cpu")
    return loaded


def params(handler, prompt: str, *seeds: int, width: int = 64, height: int = 64, negative: str | None = None):
    return GenerationParams(prompt, negative, width, height, 3, FAMILY_GUIDANCE[handler.spec.family], seeds)


def pixels(generated) -> np.ndarray:
    return np.asarray(generated.image.convert("RGB"), dtype=np.int16)


def test_loads_the_family_pipeline_from_the_saved_dir(handler):
    expected = {"sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}[handler.spec.family]
    assert type(handler.pipe).__name__ == expected


def test_images_have_the_requested_size_and_seed(handler):
    [[image]] = handler.generate([params(handler, "a red cube", 7, width=96, height=64)])
    assert image.image.size == (96, 64)
    assert image.seed == 7


def test_same_seed_gives_identical_pixels(handler):
    [[first]] = handler.generate([params(handler, "a red cube", 11)])
    [[second]] = handler.generate([params(handler, "a red cube", 11)])
    assert np.array_equal(pixels(first), pixels(second))


def test_different_seeds_give_different_images(handler):
    [[a, b]] = handler.generate([params(handler, "a red cube", 1, 2)])
    assert np.abs(pixels(a) - pixels(b)).mean() > 10


def test_a_batch_of_different_prompts_matches_each_seed_alone(handler):
    batch = [params(handler, "a red cube", 1), params(handler, "a blue ball", 2, 3), params(handler, "x", 4)]
    together = [img for request in handler.generate(batch) for img in request]
    alone = [img for p in batch for seed in p.seeds
             for img in handler.generate([params(handler, p.prompt, seed)])[0]]
    assert [img.seed for img in together] == [1, 2, 3, 4]
    for t, a in zip(together, alone, strict=True):
        # Batched kernels round differently in the last float bits; that may move a pixel by one
        # level out of 255, never more, and only in a handful of pixels.
        diff = np.abs(pixels(t) - pixels(a))
        assert diff.max() <= 1
        assert (diff > 0).mean() < 0.01


def test_prompt_changes_the_image(handler):
    [[cube]] = handler.generate([params(handler, "a red cube", 5)])
    [[ball]] = handler.generate([params(handler, "a blue ball", 5)])
    assert np.abs(pixels(cube) - pixels(ball)).max() > 1


def test_negative_prompt_is_used_by_sdxl_and_ignored_by_flux(handler, caplog):
    [[plain]] = handler.generate([params(handler, "a red cube", 5)])
    with caplog.at_level(logging.WARNING, logger="tinyimg.engine"):
        [[negated]] = handler.generate([params(handler, "a red cube", 5, negative="blurry")])
    changed = np.abs(pixels(plain) - pixels(negated)).max() > 1
    if handler.spec.family == "sdxl":
        assert changed
    else:
        assert not changed
        assert "flux has no negative prompt; ignoring it" in caplog.messages


def test_a_stop_request_skips_the_remaining_denoising_steps(handler):
    six_steps = replace(params(handler, "a red cube", 1), steps=6)
    asked = []
    [[stopped]] = handler.generate([six_steps], lambda: asked.append(True) or len(asked) >= 2)
    assert len(asked) == 2  # asked after steps 1 and 2; the loop skipped the other four
    assert stopped.image.size == (64, 64)
    asked.clear()
    handler.generate([six_steps], lambda: asked.append(True) and False)
    assert len(asked) == 6  # the next call runs every step again
