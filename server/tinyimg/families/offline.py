"""Building diffusers pipelines from configs with no download: what the family files' tiny and
full-size builders share. torch and transformers are imported inside the functions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# The CLIP ViT-L/14 text encoder (openai/clip-vit-large-patch14): SDXL's first and FLUX's.
CLIP_L = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "projection_dim": 768, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
}


@contextlib.contextmanager
def building_on(device: str, dtype: Any) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype``: a 12B-parameter transformer built in
    fp32 on the CPU would take minutes and 48 GB of host memory."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_clip_config(base: dict[str, Any], tokenizer: Any) -> Any:
    """A published CLIP text config with the special token ids of ``tokenizer``."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**base, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
