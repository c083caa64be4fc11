"""Low-resolution previews of a generation in progress: a fixed linear latent->RGB map per loaded model.

A VAE decoder is far too slow to run after every denoising step, but over a small neighbourhood
its output colour is close to a linear function of the latent channels. Each model fits that map
once, from its own VAE, when it loads (``fit_vae_preview_map``): decode a few random latents of
the pipeline's latent space, shrink the decoded images back to latent resolution, and solve
RGB = W·z + b by least squares. Applying it is one small matrix product per preview.

The fit, the map's application and the JPEG encoding are pure functions of tensors and images;
only ``fit_vae_preview_map`` runs a network. torch and PIL are imported inside the functions.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

# The longest side of a preview image, in pixels.
MAX_PREVIEW_SIDE = 128
# Fit size: a handful of 16x16 latents give 1,024 (latent, colour) pairs for at most 17 unknowns
# per colour (16 Flux channels + bias), and decode in milliseconds even on a CPU.
FIT_SAMPLES = 4
FIT_SIZE = 16
# Coarse grid the random latents are drawn on before being smoothed up to FIT_SIZE: real image
# latents are spatially correlated, and a decoder answers white noise mostly with texture.
FIT_COARSE = 4
FIT_SEED = 0  # the map is the same at every load of the same weights
JPEG_QUALITY = 70


@dataclass(frozen=True)
class LatentRGBMap:
    """RGB (in the VAE's [-1, 1] range) = ``weight`` @ latent + ``bias``, per pixel."""

    weight: Any  # torch tensor (3, channels), float32
    bias: Any  # torch tensor (3,), float32

    @property
    def channels(self) -> int:
        return int(self.weight.shape[1])


def fit_linear_map(latents: Any, rgb: Any) -> LatentRGBMap:
    """The least-squares map from ``latents`` (N, C, h, w) to ``rgb`` (N, 3, h, w), pixel by pixel."""
    import torch

    if latents.shape[0] != rgb.shape[0] or latents.shape[2:] != rgb.shape[2:]:
        raise ValueError(f"latents {tuple(latents.shape)} and colours {tuple(rgb.shape)} do not pair up")
    channels = latents.shape[1]
    rows = latents.detach().float().cpu().permute(0, 2, 3, 1).reshape(-1, channels)
    targets = rgb.detach().float().cpu().permute(0, 2, 3, 1).reshape(-1, rgb.shape[1])
    if not (bool(torch.isfinite(rows).all()) and bool(torch.isfinite(targets).all())):
        raise ValueError("cannot fit the latent->RGB map: the latents or decoded images are not finite")
    design = torch.cat([rows, torch.ones(rows.shape[0], 1)], dim=1)
    solution = torch.linalg.lstsq(design, targets).solution  # (C + 1, 3)
    return LatentRGBMap(weight=solution[:channels].T.contiguous(), bias=solution[channels].contiguous())


def apply_linear_map(mapping: LatentRGBMap, latents: Any) -> Any:
    """(N, C, h, w) latents -> (N, 3, h, w) float32 colours on the latents' device."""
    import torch

    weight = mapping.weight.to(latents.device)
    bias = mapping.bias.to(latents.device)
    return torch.einsum("nchw,rc->nrhw", latents.float(), weight) + bias.view(1, -1, 1, 1)


def build_preview_size(width: int, height: int, max_side: int = MAX_PREVIEW_SIDE) -> tuple[int, int]:
    """The image's own aspect, scaled down so its longest side is at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def build_preview_images(rgb: Any, size: tuple[int, int]) -> list[Any]:
    """(N, 3, h, w) colours in [-1, 1] -> N RGB PIL images of ``size`` (width, height)."""
    import torch
    from PIL import Image

    pixels = ((rgb.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=torch.uint8).cpu()
    return [
        Image.fromarray(p.permute(1, 2, 0).numpy(), "RGB").resize(size, Image.Resampling.BILINEAR)
        for p in pixels
    ]


def encode_data_url(image: Any, quality: int = JPEG_QUALITY) -> str:
    """A PIL image as a ``data:image/jpeg;base64,...`` URL."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sample_fit_latents(channels: int, samples: int = FIT_SAMPLES, size: int = FIT_SIZE, seed: int = FIT_SEED) -> Any:
    """Smooth random latents of about unit variance (the scale a pipeline's latents have)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator("cpu").manual_seed(seed)
    coarse = torch.randn(samples, channels, FIT_COARSE, FIT_COARSE, generator=generator)
    fine = torch.randn(samples, channels, size, size, generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    latents = smooth + 0.5 * fine
    return latents / latents.std(dim=(0, 2, 3), keepdim=True)


def to_vae_latents(latents: Any, vae_config: Any) -> Any:
    """Pipeline latents -> what ``vae.decode`` takes, as the pipelines do it before decoding:
    undo the scaling factor, and the shift (Flux) or the per-channel mean and std where the
    config has them."""
    import torch

    scaling = float(getattr(vae_config, "scaling_factor", 1.0) or 1.0)
    mean, std = getattr(vae_config, "latents_mean", None), getattr(vae_config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, latents.shape[1], 1, 1)
        mean_t = torch.tensor(mean, dtype=latents.dtype, device=latents.device).view(shape)
        std_t = torch.tensor(std, dtype=latents.dtype, device=latents.device).view(shape)
        return latents * std_t / scaling + mean_t
    return latents / scaling + float(getattr(vae_config, "shift_factor", None) or 0.0)


def fit_vae_preview_map(vae: Any, device: Any) -> LatentRGBMap:
    """Fit the map from ``vae``'s own decoder: decode random latents on ``device``, shrink the
    images to latent resolution (area average), least squares. A float16 VAE that the pipeline
    upcasts to decode (``force_upcast``) is decoded in float32 here too, as the pipeline would."""
    import torch
    import torch.nn.functional as F

    config = vae.config
    latents = sample_fit_latents(int(config.latent_channels))
    dtype = vae.dtype
    upcast = dtype == torch.float16 and bool(getattr(config, "force_upcast", False))
    with torch.inference_mode():
        if upcast:
            vae.to(torch.float32)
        try:
            decode_dtype = torch.float32 if upcast else dtype
            inputs = to_vae_latents(latents, config).to(device=device, dtype=decode_dtype)
            decoded = vae.decode(inputs).sample
        finally:
            if upcast:
                vae.to(dtype)
        small = F.interpolate(decoded.float(), size=tuple(latents.shape[2:]), mode="area")
    return fit_linear_map(latents, small)
