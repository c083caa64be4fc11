"""A fixture family, registered in the tests only: Stable Diffusion 1.x (``StableDiffusionPipeline``:
one CLIP text encoder, a UNet, classifier-free guidance with a negative prompt).

It is here to show that a family is one file: tests/support/tiny_models.py finds every
``tests/support/family_*.py`` and the family contract suite (tests/integration/server/
test_pipelines_*.py) runs over it like over the product's families, with nothing else changed.
"""

from __future__ import annotations

from typing import Any

from tinyimg.families.base import GenerationParams, Handler
from tinyimg.families.family import Family

KEY = "sd15"


class SD15Handler(Handler):
    def encode_prompt(self, params: GenerationParams, count: int) -> dict[str, Any]:
        guided = params.guidance_scale > 1.0
        embeds, negative = self.pipe.encode_prompt(
            params.prompt,
            self.execution_device(),
            count,
            guided,
            negative_prompt=params.negative_prompt,
        )
        return {"prompt_embeds": embeds, "negative_prompt_embeds": negative} if guided else {"prompt_embeds": embeds}


def build_tiny_sd15() -> Any:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from tinyimg.tiny import TINY_SEED, build_clip_tokenizer, build_tiny_clip_config, build_tiny_vae

    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8,
        cross_attention_dim=32,  # the tiny CLIP's hidden size
        norm_num_groups=1,
    )
    tokenizer = build_clip_tokenizer()
    return StableDiffusionPipeline(
        vae=build_tiny_vae(scaling_factor=0.18215),
        text_encoder=CLIPTextModel(build_tiny_clip_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
            timestep_spacing="leading",
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# The published stable-diffusion-v1-5 UNet and VAE (the text encoder is CLIP ViT-L/14).
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": 8, "cross_attention_dim": 768,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "sample_size": 512, "scaling_factor": 0.18215,
}


def build_full_sd15(device: str, dtype: Any) -> Any:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from tinyimg.families.offline import CLIP_L, build_clip_config, building_on
    from tinyimg.tiny import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    with building_on(device, dtype):
        networks = {
            "vae": AutoencoderKL(**SD15_VAE),
            "text_encoder": CLIPTextModel(build_clip_config(CLIP_L, tokenizer)),
            "unet": UNet2DConditionModel(**SD15_UNET),
        }
    return StableDiffusionPipeline(
        **networks, tokenizer=tokenizer, scheduler=EulerDiscreteScheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )


FAMILY = Family(
    handler=SD15Handler,
    pipeline_class="StableDiffusionPipeline",
    denoiser="unet",
    size_multiple=8,
    negative_prompt=True,
    default_steps=25,
    default_guidance=7.5,
    default_size=512,
    memory_gb_bf16=3.0,
    gpu_dtype="float16",
    build_tiny=build_tiny_sd15,
    build_full=build_full_sd15,
)
