"""``tinyimg make-tiny-model`` and ``make-tiny-lora``: a family's tiny random-weight pipeline (each
family file declares its ``build_tiny`` from the shared parts in ``tinyimg.tiny``) and a tiny LoRA
for it, saved the way diffusers saves real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyimg.families import FAMILIES
from tinyimg.tiny import TINY_SEED


def build_tiny_pipeline(family: str) -> Any:
    """The family's tiny pipeline (each family file declares its ``build_tiny``)."""
    if family not in FAMILIES:
        raise ValueError(f"no tiny model for family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[family].build_tiny()


def run_make_tiny_model(family: str, out: Path) -> None:
    """Build the family's tiny pipeline and save it to ``out`` (what ``tinyimg make-tiny-model`` does)."""
    pipeline = build_tiny_pipeline(family)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out)


# A tiny LoRA: rank 4 on the denoiser's attention projections.
TINY_LORA_RANK = 4
TINY_LORA_GAIN = 8.0
TINY_LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what load_lora_weights looks for


def run_make_tiny_lora(family: str, out: Path, seed: int = TINY_SEED + 1) -> None:
    """A random LoRA for the family's tiny pipeline, saved the way diffusers saves a trained one
    (``save_lora_weights``), so the server loads it through the same ``load_lora_weights`` path.
    peft's usual init makes a LoRA a no-op (B = 0); here both factors are random, so the adapter
    visibly changes the image. Seeded: building twice gives the same weights."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    info = FAMILIES[family]
    pipeline = build_tiny_pipeline(family)
    denoiser = getattr(pipeline, info.denoiser)
    torch.manual_seed(seed)
    denoiser.add_adapter(LoraConfig(
        r=TINY_LORA_RANK,
        lora_alpha=TINY_LORA_RANK,
        target_modules=list(info.lora_targets),
        init_lora_weights=False,
    ))
    # The saved file carries no alpha (diffusers then scales by 1): strengthen B itself, so the
    # change shows even through Flux's one-layer transformer.
    layers = {k: v * TINY_LORA_GAIN if "lora_B" in k else v for k, v in get_peft_model_state_dict(denoiser).items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    type(pipeline).save_lora_weights(out, **{f"{info.denoiser}_lora_layers": layers}, weight_name=TINY_LORA_WEIGHT_NAME)


def run_make_tiny_classifier(out: Path, seed: int = TINY_SEED + 2) -> None:
    """A tiny random-weight image classifier (ViT, 32x32 input, labels ``normal`` and ``nsfw``) for
    the content checks (``safety.checker: classifier``), built offline as the tiny models are. Its
    weights are drawn wide (initializer range 1), so the scores of different images spread over
    [0, 1] and a threshold between two of them flags one and passes the other."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64, initializer_range=1.0,
                       id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1})
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)
