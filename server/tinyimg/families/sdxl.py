"""Stable Diffusion XL: two CLIP text encoders, a UNet, classifier-free guidance with a negative prompt."""

from __future__ import annotations

from typing import Any

from tinyimg.families.base import GenerationParams, Handler, repeat_per_image
from tinyimg.families.family import Family
from tinyimg.families.schedulers import DIFFUSION_SCHEDULERS


class SDXLHandler(Handler):
    def encode_prompts(self, batch: list[GenerationParams]) -> dict[str, Any]:
        """Every prompt and negative prompt of the batch in ONE call of each text encoder.

        diffusers encodes a negative prompt exactly as a prompt (same padding to 77 tokens,
        penultimate hidden states, pooled output of the second encoder), so the negatives ride in
        the same call as extra rows. A request without one gets zeros where the checkpoint says
        so (``force_zeros_for_empty_prompt``, as diffusers does), else the empty prompt's rows."""
        import torch

        guided = batch[0].guidance_scale > 1.0
        zeros = self.pipe.config.get("force_zeros_for_empty_prompt", True)
        negatives = [p.negative_prompt if p.negative_prompt is not None or not zeros else None for p in batch]
        encoded_negatives = [n for n in negatives if n is not None] if guided else []
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            [p.prompt for p in batch] + encoded_negatives,
            device=self.execution_device(),
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        count = len(batch)
        arguments = {"prompt_embeds": embeds[:count], "pooled_prompt_embeds": pooled[:count]}
        if guided:
            rows, row = [], count
            for i, negative in enumerate(negatives):
                if negative is None:
                    rows.append((torch.zeros_like(embeds[i]), torch.zeros_like(pooled[i])))
                else:
                    rows.append((embeds[row], pooled[row]))
                    row += 1
            arguments |= {"negative_prompt_embeds": torch.stack([r[0] for r in rows]),
                          "negative_pooled_prompt_embeds": torch.stack([r[1] for r in rows])}
        return {key: repeat_per_image(value, batch) for key, value in arguments.items()}


def build_tiny_sdxl() -> Any:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from tinyimg.tiny import TINY_SEED, build_clip_tokenizer, build_tiny_clip_config, build_tiny_vae

    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=64,  # both text encoders' hidden states side by side (32 + 32)
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop ids + pooled text
        norm_num_groups=1,
    )
    vae = build_tiny_vae()
    tokenizer = build_clip_tokenizer()
    text_config = build_tiny_clip_config(tokenizer)
    text_encoder = CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )


# --- published configs (stabilityai/stable-diffusion-xl-base-1.0), for the GPU benchmark ---
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "attention_head_dim": (5, 10, 20),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "cross_attention_dim": 2048, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32, "norm_eps": 1e-5,
}
SDXL_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32, "sample_size": 1024,
    "scaling_factor": 0.13025, "force_upcast": True,
}
SDXL_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "steps_offset": 1, "timestep_spacing": "leading", "prediction_type": "epsilon",
}
CLIP_BIGG = {  # SDXL text_encoder_2
    "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 20, "projection_dim": 1280, "max_position_embeddings": 77, "hidden_act": "gelu",
}


def build_full_sdxl(device: str, dtype: Any) -> Any:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from tinyimg.families.offline import CLIP_L, build_clip_config, building_on
    from tinyimg.tiny import build_clip_tokenizer

    tokenizer, tokenizer_2 = build_clip_tokenizer(), build_clip_tokenizer()
    with building_on(device, dtype):  # the networks only: the scheduler keeps float32 CPU tables
        networks = {
            "vae": AutoencoderKL(**SDXL_VAE),
            "text_encoder": CLIPTextModel(build_clip_config(CLIP_L, tokenizer)),
            "text_encoder_2": CLIPTextModelWithProjection(build_clip_config(CLIP_BIGG, tokenizer_2)),
            "unet": UNet2DConditionModel(**SDXL_UNET),
        }
    return StableDiffusionXLPipeline(
        **networks, tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER)
    )


FAMILY = Family(
    handler=SDXLHandler,
    pipeline_class="StableDiffusionXLPipeline",
    denoiser="unet",
    size_multiple=8,
    negative_prompt=True,
    default_steps=30,
    default_guidance=5.0,
    default_size=1024,
    memory_gb_bf16=10.0,
    gpu_dtype="float16",  # SDXL checkpoints ship an fp16 variant
    build_tiny=build_tiny_sdxl,
    build_full=build_full_sdxl,
    img2img_pipeline_class="StableDiffusionXLImg2ImgPipeline",
    inpaint_pipeline_class="StableDiffusionXLInpaintPipeline",
    schedulers=DIFFUSION_SCHEDULERS,
)
