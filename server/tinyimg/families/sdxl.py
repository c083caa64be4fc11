"""Stable Diffusion XL: two CLIP text encoders, a UNet, classifier-free guidance with a negative prompt."""

from __future__ import annotations

from typing import Any

from tinyimg.families.base import Handler
from tinyimg.runtime.jobs import GenerationParams


class SDXLHandler(Handler):
    pipeline_class = "StableDiffusionXLPipeline"
    denoiser = "unet"

    def encode_prompt(self, params: GenerationParams, count: int) -> dict[str, Any]:
        guided = params.guidance_scale > 1.0
        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            params.prompt,
            device=self.execution_device(),
            num_images_per_prompt=count,
            do_classifier_free_guidance=guided,
            negative_prompt=params.negative_prompt,
        )
        arguments = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if guided:
            arguments |= {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
        return arguments
