"""FLUX.1: a CLIP and a T5 text encoder and a rectified-flow transformer.

Flux has no negative prompt (its distilled guidance has no unconditional branch). The HTTP API
refuses one with a 422 naming ``negative_prompt``; should one reach the handler another way, it
is ignored with a warning. ``guidance_scale`` only matters for
guidance-distilled checkpoints (FLUX.1-dev); FLUX.1-schnell ignores it.
"""

from __future__ import annotations

import logging
from typing import Any

from tinyimg.families.base import Handler
from tinyimg.runtime.jobs import GenerationParams

log = logging.getLogger("tinyimg.engine")

# T5 tokens of prompt; 256 is what FLUX.1-schnell was distilled with.
MAX_SEQUENCE_LENGTH = 256


class FluxHandler(Handler):
    pipeline_class = "FluxPipeline"
    denoiser = "transformer"

    def max_sequence_length(self) -> int:
        return min(MAX_SEQUENCE_LENGTH, self.pipe.tokenizer_2.model_max_length)

    def encode_prompt(self, params: GenerationParams, count: int) -> dict[str, Any]:
        if params.negative_prompt:
            log.warning(
                "flux has no negative prompt; ignoring it",
                extra={"model": self.spec.name, "request_id": params.request_id},
            )
        embeds, pooled, _text_ids = self.pipe.encode_prompt(
            prompt=params.prompt,
            prompt_2=None,
            device=self.execution_device(),
            num_images_per_prompt=count,
            max_sequence_length=self.max_sequence_length(),
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def call_arguments(self, params: GenerationParams) -> dict[str, Any]:
        return {"guidance_scale": params.guidance_scale, "max_sequence_length": self.max_sequence_length()}
