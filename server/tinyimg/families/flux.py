"""FLUX.1: a CLIP and a T5 text encoder and a rectified-flow transformer.

Flux has no negative prompt (its distilled guidance has no unconditional branch). The HTTP API
refuses one with a 422 naming ``negative_prompt``; should one reach the handler another way, it
is ignored with a warning. ``guidance_scale`` only matters for
guidance-distilled checkpoints (FLUX.1-dev); FLUX.1-schnell ignores it.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from tinyimg.families.base import GenerationParams, Handler, repeat_per_image
from tinyimg.families.family import Family
from tinyimg.families.schedulers import FLOW_MATCHING_SCHEDULERS

log = logging.getLogger("tinyimg.engine")

# T5 tokens of prompt; 256 is what FLUX.1-schnell was distilled with.
MAX_SEQUENCE_LENGTH = 256


class FluxHandler(Handler):
    def max_sequence_length(self) -> int:
        return min(MAX_SEQUENCE_LENGTH, cast(int, self.pipe.tokenizer_2.model_max_length))

    def encode_prompts(self, batch: list[GenerationParams]) -> dict[str, Any]:
        """Every prompt of the batch in ONE call of each text encoder (both pad to a fixed length,
        so a prompt's rows do not depend on its neighbours)."""
        for params in batch:
            if params.negative_prompt:
                log.warning(
                    "flux has no negative prompt; ignoring it",
                    extra={"model": self.spec.name, "request_id": params.request_id},
                )
        embeds, pooled, _text_ids = self.pipe.encode_prompt(
            prompt=[p.prompt for p in batch],
            prompt_2=None,
            device=self.execution_device(),
            num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length(),
        )
        return {"prompt_embeds": repeat_per_image(embeds, batch), "pooled_prompt_embeds": repeat_per_image(pooled, batch)}

    def call_arguments(self, params: GenerationParams) -> dict[str, Any]:
        return {"guidance_scale": params.guidance_scale, "max_sequence_length": self.max_sequence_length()}

    def preview_latents(self, latents: Any, params: GenerationParams) -> Any:
        """Flux packs 2x2 latent patches into tokens: unpack them with the pipeline's own helper,
        as it does before decoding."""
        return self.pipe._unpack_latents(latents, params.height, params.width, self.pipe.vae_scale_factor)


def build_tiny_flux() -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    from tinyimg.tiny import TINY_SEED, build_clip_tokenizer, build_t5_tokenizer, build_tiny_clip_config, build_tiny_vae

    torch.manual_seed(TINY_SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=False,  # like FLUX.1-schnell
    )
    vae = build_tiny_vae(
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    tokenizer = build_clip_tokenizer()
    text_encoder = CLIPTextModel(build_tiny_clip_config(tokenizer))
    tokenizer_2 = build_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )  # type: ignore[call-arg]  # transformers 5's stub omits the extra keys its config takes
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


# --- published configs (black-forest-labs/FLUX.1-schnell), for the GPU benchmark ---
FLUX_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
    "guidance_embeds": False, "axes_dims_rope": (16, 56, 56),
}
FLUX_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32, "sample_size": 1024,
    "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False, "use_post_quant_conv": False,
}
FLUX_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
T5_XXL: dict[str, Any] = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_gated_act": True,
    "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
}


def build_full_flux(device: str, dtype: Any, guidance_embeds: bool = False) -> Any:
    """FLUX.1-schnell's architecture; with ``guidance_embeds`` FLUX.1-dev's (its distilled guidance input)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    from tinyimg.families.offline import CLIP_L, build_clip_config, building_on
    from tinyimg.tiny import build_clip_tokenizer, build_t5_tokenizer

    tokenizer = build_clip_tokenizer()
    with building_on(device, dtype):
        networks = {
            "vae": AutoencoderKL(**FLUX_VAE),
            "text_encoder": CLIPTextModel(build_clip_config(CLIP_L, tokenizer)),
            "text_encoder_2": T5EncoderModel(T5Config(**T5_XXL)),
            "transformer": FluxTransformer2DModel(**{**FLUX_TRANSFORMER, "guidance_embeds": guidance_embeds}),
        }
    return FluxPipeline(
        **networks, tokenizer=tokenizer, tokenizer_2=build_t5_tokenizer(MAX_SEQUENCE_LENGTH),
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
    )


FAMILY = Family(
    handler=FluxHandler,
    pipeline_class="FluxPipeline",
    denoiser="transformer",
    size_multiple=16,
    negative_prompt=False,
    default_steps=4,
    default_guidance=0.0,
    default_size=1024,
    memory_gb_bf16=34.0,
    gpu_dtype="bfloat16",  # Flux activations overflow float16
    build_tiny=build_tiny_flux,
    build_full=build_full_flux,
    img2img_pipeline_class="FluxImg2ImgPipeline",
    inpaint_pipeline_class="FluxInpaintPipeline",
    schedulers=FLOW_MATCHING_SCHEDULERS,
)
