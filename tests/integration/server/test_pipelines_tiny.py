"""The family contract suite: every registered family (the product's and the tests' fixture
families, see tests/support/tiny_models.py) on its real tiny pipeline, loaded from disk through
from_pretrained, on CPU. A family is tested here the moment it is registered."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.support.tiny_models import (  # noqa: F401  (fixtures)
    ALL_FAMILIES,
    all_tiny_model_dirs,
    fixture_families,
    tiny_config,
)
from tinyimg.families import family_info, load_handler_class
from tinyimg.families.base import GenerationParams, Handler
from tinyimg.families.preview import apply_linear_map, sample_fit_latents, to_vae_latents
from tinyimg.runtime.engine import Engine


@pytest.fixture(scope="module", params=ALL_FAMILIES)
def handler(request, all_tiny_model_dirs, fixture_families):
    family = request.param
    spec = tiny_config(all_tiny_model_dirs, families=(family,)).models[0]
    loaded = load_handler_class(family)(spec)
    loaded.load("cpu")
    return loaded


def params(handler, prompt: str, *seeds: int, width: int = 64, height: int = 64, negative: str | None = None):
    return GenerationParams(prompt, negative, width, height, 3, handler.family.default_guidance, seeds)


def pixels(generated) -> np.ndarray:
    return np.asarray(generated.image.convert("RGB"), dtype=np.int16)


def test_the_declaration_is_complete_and_consistent(handler):
    family = family_info(handler.spec.family)
    assert issubclass(family.handler, Handler) and family.handler is not Handler
    assert family.default_size % family.size_multiple == 0
    assert family.default_steps >= 1 and family.default_guidance >= 0 and family.memory_gb_bf16 > 0
    assert family.gpu_dtype in ("float16", "bfloat16")
    assert hasattr(handler.pipe, family.denoiser)


def test_loads_the_family_pipeline_from_the_saved_dir(handler):
    assert type(handler.pipe).__name__ == family_info(handler.spec.family).pipeline_class


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


def assert_each_image_matches_its_seed_alone(handler, batch):
    together = [img for request in handler.generate(batch) for img in request]
    alone = [img for p in batch for seed in p.seeds
             for img in handler.generate([replace(p, seeds=(seed,))])[0]]
    assert [img.seed for img in together] == [seed for p in batch for seed in p.seeds]
    for t, a in zip(together, alone, strict=True):
        # Batched kernels round differently in the last float bits; that may move a pixel by one
        # level out of 255, never more, and only in a handful of pixels.
        diff = np.abs(pixels(t) - pixels(a))
        assert diff.max() <= 1
        assert (diff > 0).mean() < 0.01


def test_a_batch_of_different_prompts_matches_each_seed_alone(handler):
    batch = [params(handler, "a red cube", 1), params(handler, "a blue ball", 2, 3), params(handler, "x", 4)]
    assert_each_image_matches_its_seed_alone(handler, batch)


def test_a_batch_keeps_each_requests_own_negative_prompt(handler):
    # The prompts of a batch are encoded in one text-encoder call: negatives (none, empty, two
    # different ones) must still land on their own request's images.
    batch = [params(handler, "a red cube", 1, negative="blurry"), params(handler, "a red cube", 2),
             params(handler, "a red cube", 3, 4, negative="dark"), params(handler, "a red cube", 5, negative="")]
    assert_each_image_matches_its_seed_alone(handler, batch)


def test_prompt_changes_the_image(handler):
    [[cube]] = handler.generate([params(handler, "a red cube", 5)])
    [[ball]] = handler.generate([params(handler, "a blue ball", 5)])
    assert np.abs(pixels(cube) - pixels(ball)).max() > 1


def test_negative_prompt_is_used_exactly_when_the_family_declares_it(handler, caplog):
    [[plain]] = handler.generate([params(handler, "a red cube", 5)])
    with caplog.at_level(logging.WARNING, logger="tinyimg.engine"):
        [[negated]] = handler.generate([params(handler, "a red cube", 5, negative="blurry")])
    changed = bool(np.abs(pixels(plain) - pixels(negated)).max() > 1)
    assert changed is handler.family.negative_prompt
    if not handler.family.negative_prompt:
        assert any("no negative prompt; ignoring it" in m for m in caplog.messages)


def test_a_stop_request_skips_the_remaining_denoising_steps(handler):
    six_steps = replace(params(handler, "a red cube", 1), steps=6)
    asked = []
    [[stopped]] = handler.generate([six_steps], lambda: asked.append(True) or len(asked) >= 2)
    assert len(asked) == 2  # asked after steps 1 and 2; the loop skipped the other four
    assert stopped.image.size == (64, 64)
    asked.clear()
    handler.generate([six_steps], lambda: asked.append(True) and False)
    assert len(asked) == 6  # the next call runs every step again


def test_the_engine_loads_it_places_it_and_serves_a_batch(handler, all_tiny_model_dirs):
    family = handler.spec.family
    batches = []

    async def serve() -> list:
        engine = Engine(tiny_config(all_tiny_model_dirs, families=(family,), runtime={"maxBatchWaitMs": 300}),
                        on_batch=lambda m, n, s: batches.append(n))
        await engine.start()
        try:
            while engine.readiness()[1].startswith("loading"):
                await asyncio.sleep(0.02)
            assert engine.readiness() == (True, "all models ready")
            batches.clear()  # forget the warm-up
            wanted = [GenerationParams(f"prompt {i}", None, 64, 64, 2, handler.family.default_guidance, (i,))
                      for i in range(3)]
            return await asyncio.gather(*(engine.generate(f"tiny-{family}", p) for p in wanted))
        finally:
            await engine.stop()

    results = asyncio.run(serve())
    assert [r.images[0].seed for r in results] == [0, 1, 2]
    assert batches == [3]  # one pipeline call for all three


def test_it_fits_a_preview_map_from_its_own_vae_at_load(handler):
    """The map explains part of what the VAE decodes from fresh latents (R² above zero: better than
    the mean colour), in the pipeline's latent space."""
    mapping = handler.preview_map
    vae = handler.pipe.vae
    assert mapping is not None and mapping.channels == vae.config.latent_channels
    fresh = sample_fit_latents(mapping.channels, seed=1)
    with torch.inference_mode():
        decoded = vae.decode(to_vae_latents(fresh, vae.config)).sample
    target = torch.nn.functional.interpolate(decoded, size=tuple(fresh.shape[2:]), mode="area")
    residual = ((apply_linear_map(mapping, fresh) - target) ** 2).mean()
    spread = ((target - target.mean(dim=(0, 2, 3), keepdim=True)) ** 2).mean()
    assert 1 - residual / spread > 0.05


def test_previews_come_from_each_requests_own_latents_at_the_preview_size(handler):
    """Previews rendered after every step for a batch of two requests (one image, then two). The
    latents a preview is made from (unpacked by the family's ``preview_latents``) are the ones the
    pipeline decodes: at the last step, decoding them with the VAE gives the finished images."""
    batch = [params(handler, "a red cube", 5, width=96, height=64), params(handler, "a blue ball", 6, 7, width=96, height=64)]
    rendered: dict[int, tuple[list, list]] = {}
    seen: list = []
    unpack = handler.preview_latents
    handler.preview_latents = lambda latents, p: seen.append(unpack(latents, p)) or seen[-1]

    def on_latents(step: int, total: int, render) -> None:
        rendered[step] = (render(0, 1), render(1, 2))

    try:
        results = handler.generate(batch, on_latents=on_latents)
    finally:
        del handler.preview_latents
    assert sorted(rendered) == [1, 2, 3]
    first, second = rendered[3]
    assert [i.size for i in first + second] == [(96, 64)] * 3 and all(i.mode == "RGB" for i in first + second)
    assert np.abs(np.asarray(first[0], dtype=np.int16) - np.asarray(second[0], dtype=np.int16)).mean() > 1
    last = torch.cat(seen[-2:])  # step 3: request 1's latents, then request 2's
    assert last.shape == (3, handler.pipe.vae.config.latent_channels, 32, 48)
    vae = handler.pipe.vae
    with torch.inference_mode():
        decoded = vae.decode(to_vae_latents(last, vae.config)).sample
    images = handler.pipe.image_processor.postprocess(decoded, output_type="np")
    finished = np.stack([np.asarray(g.image.convert("RGB")) for request in results for g in request])
    assert np.abs(np.round(images * 255) - finished).max() <= 1
