"""A tiny Stable Diffusion safety checker for tests, built offline: diffusers'
``StableDiffusionSafetyChecker`` on a 1-layer CLIP with random weights, and its concept thresholds
set so that it flags every image (``flag_all``) or none: its verdicts are then known in advance."""

from __future__ import annotations

from pathlib import Path


def write_tiny_sd_checker(directory: Path, flag_all: bool) -> Path:
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": 8}
    config = CLIPConfig(text_config={**tiny, "vocab_size": 100, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
                        vision_config={**tiny, "image_size": 32, "patch_size": 8}, projection_dim=8)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():  # a concept is "present" when the cosine similarity passes its threshold
        checker.concept_embeds_weights.fill_(-2.0 if flag_all else 2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    checker.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory
