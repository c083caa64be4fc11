"""On a GPU machine: the first image-to-image and inpaint requests add no weights to the GPU
(torch's allocator, after the call, is where it was; only activations come and go)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.support.tiny_models import FAMILIES, tiny_config, tiny_model_dirs  # noqa: F401  (fixture)
from tinyimg.families import load_handler_class
from tinyimg.families.base import GenerationParams

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("family", FAMILIES)
def test_first_img2img_and_inpaint_allocate_no_second_copy_of_the_weights(tiny_model_dirs, family):
    import torch

    spec = tiny_config(tiny_model_dirs, families=(family,), dtype="auto", runtime={"device": "cuda"},
                       resources={"gpus": 1}).models[0]
    handler = load_handler_class(family)(spec)
    handler.load("cuda:0")
    guidance = handler.family.default_guidance
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    handler.generate([GenerationParams("x", None, 64, 64, 2, guidance, (1,))])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    weights = sum(p.numel() * p.element_size() for m in handler.pipe.components.values()
                  if hasattr(m, "parameters") for p in m.parameters())
    for mode, mask in (("img2img", None), ("inpaint", Image.new("L", (64, 64), 255))):
        handler.generate([GenerationParams("x", None, 64, 64, 2, guidance, (1,), mode=mode, strength=1.0 if mask else 0.5,
                                           image=image, mask=mask)])
    torch.cuda.synchronize()
    grown = torch.cuda.memory_allocated() - before
    assert grown < 0.05 * weights, f"{grown} bytes more after img2img/inpaint; weights are {weights} bytes"
