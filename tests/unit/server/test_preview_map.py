"""The preview map's pure parts (tinyimg.families.preview): the least-squares fit, applying it,
scaling latents the way pipelines do, and turning colours into small JPEG data URLs."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from tinyimg.families.preview import (
    FIT_SIZE,
    LatentRGBMap,
    apply_linear_map,
    build_preview_images,
    build_preview_size,
    encode_data_url,
    fit_linear_map,
    fit_vae_preview_map,
    sample_fit_latents,
    to_vae_latents,
)

KNOWN_WEIGHT = torch.tensor([[0.30, -0.20, 0.10, 0.05], [0.00, 0.40, -0.30, 0.10], [-0.25, 0.10, 0.20, 0.35]])
KNOWN_BIAS = torch.tensor([0.10, -0.05, 0.20])


def linear_colours(latents: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nchw,rc->nrhw", latents, KNOWN_WEIGHT) + KNOWN_BIAS.view(1, 3, 1, 1)


def test_the_fit_recovers_a_known_linear_map():
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    fitted = fit_linear_map(latents, linear_colours(latents))
    assert fitted.weight.shape == (3, 4) and fitted.bias.shape == (3,) and fitted.channels == 4
    torch.testing.assert_close(fitted.weight, KNOWN_WEIGHT, atol=1e-5, rtol=0)
    torch.testing.assert_close(fitted.bias, KNOWN_BIAS, atol=1e-5, rtol=0)


def test_the_fit_averages_out_noise():
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn(4, 4, 16, 16, generator=generator)
    noisy = linear_colours(latents) + 0.05 * torch.randn(4, 3, 16, 16, generator=generator)
    fitted = fit_linear_map(latents, noisy)
    assert (fitted.weight - KNOWN_WEIGHT).abs().max() < 0.01 and (fitted.bias - KNOWN_BIAS).abs().max() < 0.01


def test_the_fit_refuses_pairs_that_do_not_match_or_are_not_finite():
    latents = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match="do not pair up"):
        fit_linear_map(latents, torch.zeros(2, 3, 4, 4))
    colours = linear_colours(latents)
    colours[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        fit_linear_map(latents, colours)


def test_applying_the_map_gives_w_z_plus_b_at_every_pixel():
    mapping = LatentRGBMap(KNOWN_WEIGHT, KNOWN_BIAS)
    latents = torch.zeros(1, 4, 2, 3)
    latents[0, :, 1, 2] = torch.tensor([1.0, 2.0, -1.0, 0.5])
    rgb = apply_linear_map(mapping, latents.to(torch.bfloat16))  # half-precision latents are computed in float32
    assert rgb.shape == (1, 3, 2, 3) and rgb.dtype == torch.float32
    torch.testing.assert_close(rgb[0, :, 0, 0], KNOWN_BIAS)
    # By hand: 0.3 - 0.4 - 0.1 + 0.025 + 0.1, 0.8 + 0.3 + 0.05 - 0.05, -0.25 + 0.2 - 0.2 + 0.175 + 0.2.
    torch.testing.assert_close(rgb[0, :, 1, 2], torch.tensor([-0.075, 1.10, 0.125]))


@pytest.mark.parametrize(
    "size, expected",
    [
        pytest.param((1024, 1024), (128, 128), id="square-large"),
        pytest.param((256, 192), (128, 96), id="landscape"),
        pytest.param((768, 1344), (73, 128), id="portrait-rounded"),
        pytest.param((64, 48), (64, 48), id="small-kept"),
        pytest.param((2048, 8), (128, 1), id="thin-at-least-one-pixel"),
    ],
)
def test_preview_size_keeps_the_aspect_with_the_long_side_at_most_128(size, expected):
    assert build_preview_size(*size) == expected


def test_colours_become_rgb_images_of_the_preview_size():
    rgb = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2).clone()
    rgb[1] = 5.0  # out of range: clamped
    first, second = build_preview_images(rgb, (4, 3))
    assert first.size == (4, 3) and first.mode == "RGB"
    assert first.getpixel((0, 0)) == (0, 128, 255) and first.getpixel((3, 2)) == (0, 128, 255)
    assert second.getpixel((1, 1)) == (255, 255, 255)


def test_a_data_url_holds_a_jpeg_of_the_image():
    url = encode_data_url(Image.new("RGB", (40, 30), (200, 30, 90)))
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    decoded = Image.open(io.BytesIO(base64.b64decode(url[len(prefix):])))
    assert decoded.format == "JPEG" and decoded.size == (40, 30)
    assert all(abs(a - b) <= 4 for a, b in zip(decoded.convert("RGB").getpixel((20, 15)), (200, 30, 90), strict=True))


def test_fit_latents_are_seeded_smooth_and_of_unit_variance():
    latents = sample_fit_latents(16)
    assert latents.shape == (4, 16, FIT_SIZE, FIT_SIZE)
    torch.testing.assert_close(latents, sample_fit_latents(16))
    torch.testing.assert_close(latents.std(dim=(0, 2, 3)), torch.ones(16), atol=1e-5, rtol=0)
    # Neighbours are correlated (real latents are): the smooth part dominates the white noise.
    neighbours = torch.corrcoef(torch.stack([latents[..., :-1].flatten(), latents[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.5


@pytest.mark.parametrize(
    "config, expected",
    [
        pytest.param({"scaling_factor": 0.5}, [4.0, -2.0], id="scale-only-sdxl"),
        pytest.param({"scaling_factor": 0.5, "shift_factor": 0.25}, [4.25, -1.75], id="scale-and-shift-flux"),
        pytest.param({"scaling_factor": 0.5, "shift_factor": None}, [4.0, -2.0], id="shift-none"),
        pytest.param({"scaling_factor": 0.5, "latents_mean": [1.0, 2.0], "latents_std": [2.0, 3.0]},
                     [9.0, -4.0], id="mean-and-std"),
    ],
)
def test_pipeline_latents_are_scaled_back_as_the_pipelines_do_before_decoding(config, expected):
    latents = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1)
    assert to_vae_latents(latents, SimpleNamespace(**config)).flatten().tolist() == expected


class LinearDecoder(torch.nn.Module):
    """A stand-in for a VAE whose answer is known: a 1x1 convolution (the known map, applied to
    the VAE-space latents) then 2x nearest upsampling, so the fit must undo the config's scaling
    and shift and the downsampling to find it again."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.conv = torch.nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(KNOWN_WEIGHT.view(3, 4, 1, 1))
            self.conv.bias.copy_(KNOWN_BIAS)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv.weight.dtype

    def decode(self, latents: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.nn.functional.interpolate(self.conv(latents), scale_factor=2.0))


def test_fitting_from_a_decoder_finds_its_map_in_pipeline_latent_space():
    scale, shift = 0.5, 0.25
    vae = LinearDecoder(SimpleNamespace(latent_channels=4, scaling_factor=scale, shift_factor=shift))
    fitted = fit_vae_preview_map(vae, "cpu")
    # rgb = W (z / scale + shift) + b = (W / scale) z + (W·shift + b)
    torch.testing.assert_close(fitted.weight, KNOWN_WEIGHT / scale, atol=1e-4, rtol=0)
    torch.testing.assert_close(fitted.bias, KNOWN_WEIGHT.sum(dim=1) * shift + KNOWN_BIAS, atol=1e-4, rtol=0)
