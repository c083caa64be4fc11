"""The new generation fields, from body to engine parameters: input images (decoding, bounds,
orientation, sizing), mask, strength, scheduler and LoRA adapters. Real Pillow, no pipeline."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from tinyimg.core.errors import ApiError, InvalidField
from tinyimg.runtime.inputs import fit_size
from tinyimg.runtime.params import build_generation_params, build_model_rules
from tinyimg.spec import ModelSpec
from tinyimg.wire.requests import GenerateRequest


def resolve(req, spec, *args):
    """``build_generation_params`` against the spec's rules (resolved once per model in the service)."""
    return build_generation_params(req, build_model_rules(spec), *args)


SDXL = ModelSpec(
    name="tiny-sdxl", family="sdxl", source="/models/sdxl",
    defaults={"steps": 4, "width": 64, "height": 64},
    limits={"maxWidth": 256, "maxHeight": 128, "maxSteps": 20, "maxInputPixels": 512 * 512, "maxAdapters": 2},
    adapters=[{"name": "style", "source": "/loras/style"}, {"name": "ink", "source": "/loras/ink", "scale": 0.7},
              {"name": "third", "source": "/loras/third"}],
)
FLUX = ModelSpec(name="tiny-flux", family="flux", source="/models/flux", defaults={"width": 64, "height": 64})


def encode(image: Image.Image, fmt: str = "PNG", **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return base64.b64encode(buffer.getvalue()).decode()


def png_header_only(width: int, height: int) -> str:
    """A valid PNG signature and IHDR claiming ``width`` x ``height``, and no pixel data: the
    decompression-bomb shape (a few bytes that would decode to gigabytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", b"") + chunk(b"IEND", b"")).decode()


def truncated_png() -> str:
    data = base64.b64decode(encode(noise((64, 64))))
    return base64.b64encode(data[: len(data) // 2]).decode()


def noise(size) -> Image.Image:
    return Image.frombytes("RGB", size, bytes(range(256)) * (size[0] * size[1] * 3 // 256 + 1))


def request(**fields) -> GenerateRequest:
    return GenerateRequest(model="tiny-sdxl", prompt="a red fox", seed=1, **fields)


def red(size=(64, 64)) -> Image.Image:
    return Image.new("RGB", size, (255, 0, 0))


def refused(spec: ModelSpec = SDXL, **fields) -> ApiError:
    with pytest.raises(ApiError) as caught:
        resolve(request(**fields), spec)
    return caught.value


# -- modes -------------------------------------------------------------------------------------
def test_no_image_is_text_to_image_with_no_strength():
    params = resolve(request(), SDXL)
    assert (params.mode, params.strength, params.image, params.mask) == ("txt2img", None, None, None)


def test_an_image_is_img2img_at_the_default_strength_and_the_image_is_decoded():
    params = resolve(request(image=encode(red())), SDXL)
    assert (params.mode, params.strength) == ("img2img", 0.8)
    assert params.image.size == (64, 64) and params.image.getpixel((3, 3)) == (255, 0, 0)


def test_an_image_and_mask_is_inpaint_at_full_strength_with_a_grey_mask():
    mask = Image.new("RGB", (64, 64), (255, 255, 255))
    params = resolve(request(image=encode(red()), mask=encode(mask), strength=0.6), SDXL)
    assert (params.mode, params.strength, params.mask.mode) == ("inpaint", 0.6, "L")
    assert params.mask.getpixel((0, 0)) == 255


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_inputs_are_accepted_also_as_data_urls(fmt):
    data = f"data:image/{fmt.lower()};base64," + encode(red(), fmt)
    assert resolve(request(image=data), SDXL).image.size == (64, 64)


# -- sizing rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "max_size", "multiple", "expected"),
    [
        pytest.param((64, 64), (256, 256), 8, (64, 64), id="fits-as-is"),
        pytest.param((100, 70), (256, 256), 8, (96, 64), id="rounded-down-to-the-multiple"),
        pytest.param((1000, 500), (256, 256), 8, (256, 128), id="scaled-down-keeping-the-aspect"),
        pytest.param((500, 1000), (256, 128), 16, (64, 128), id="tallest-side-decides"),
    ],
)
def test_fit_size(size, max_size, multiple, expected):
    assert fit_size(size, max_size, multiple) == expected


def test_without_width_and_height_the_output_takes_the_inputs_size_fitted_to_the_limits():
    params = resolve(request(image=encode(red((600, 300)))), SDXL)
    assert (params.width, params.height) == (256, 128) and params.image.size == (256, 128)


def test_a_requested_size_resizes_the_input_and_its_mask():
    mask = Image.new("L", (40, 40), 255)
    params = resolve(request(image=encode(red((40, 40))), mask=encode(mask), width=96, height=64), SDXL)
    assert params.image.size == params.mask.size == (96, 64)


def test_exif_orientation_is_applied_before_sizing():
    image = red((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": a portrait phone photo
    params = resolve(request(image=encode(image, "JPEG", exif=exif)), SDXL)
    assert (params.width, params.height) == (40, 80)


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "status", "field", "words"),
    [
        pytest.param({"image": "%%%not base64"}, 422, "image", "base64", id="not-base64"),
        pytest.param({"image": base64.b64encode(b"hello, not an image").decode()}, 422, "image", "not a png",
                     id="not-an-image"),
        pytest.param({"image": truncated_png()}, 422, "image", "unreadable", id="truncated-png"),
        pytest.param({"image": png_header_only(100_000, 100_000)}, 413, "image", "pixels",
                     id="100000x100000-png-header"),
        pytest.param({"image": png_header_only(10_000, 10_000)}, 413, "image", "over this model's maximum",
                     id="10000x10000-png-header-over-the-models-bound"),
        pytest.param({"image": encode(red((600, 600)))}, 413, "image", "262144", id="over-max-input-pixels"),
        pytest.param({"image": encode(red()), "mask": encode(Image.new("L", (32, 64)))}, 422, "mask",
                     "not the image's size", id="mask-of-another-size"),
        pytest.param({"mask": encode(red())}, 422, "mask", "only with an input image", id="mask-without-image"),
        pytest.param({"strength": 0.5}, 422, "strength", "only with an input image", id="strength-without-image"),
        pytest.param({"image": encode(red()), "strength": 0.1}, 422, "strength", "no denoising step",
                     id="strength-times-steps-under-one"),
        pytest.param({"image": encode(red((4, 4)))}, 422, "image", "too small", id="smaller-than-the-multiple"),
        pytest.param({"image": encode(red()), "width": 512}, 422, "width", "maximum", id="size-over-the-limit"),
    ],
)
def test_bad_inputs_are_refused_naming_the_field(fields, status, field, words):
    err = refused(**fields)
    assert (err.status, err.extra["field"]) == (status, field)
    assert words in err.message


def test_strength_is_bounded_by_the_schema():
    with pytest.raises(ValueError, match="strength"):
        request(image=encode(red()), strength=0.0)
    with pytest.raises(ValueError, match="strength"):
        request(image=encode(red()), strength=1.5)


# -- scheduler -----------------------------------------------------------------------------------
def test_a_listed_scheduler_is_kept_and_absent_means_the_models_own():
    assert resolve(request(scheduler="dpmpp_2m_karras"), SDXL).scheduler == "dpmpp_2m_karras"
    assert resolve(request(), SDXL).scheduler is None


@pytest.mark.parametrize(
    ("spec", "name", "allowed"),
    [
        pytest.param(SDXL, "k_lms", "euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, unipc", id="sdxl-unknown"),
        pytest.param(FLUX, "euler_a", "flow_match_euler", id="flux-refuses-a-diffusion-sampler"),
    ],
)
def test_an_unlisted_scheduler_is_a_422_listing_the_allowed_values(spec, name, allowed):
    with pytest.raises(InvalidField) as caught:
        resolve(GenerateRequest(model=spec.name, prompt="x", scheduler=name), spec)
    assert caught.value.field == "scheduler"
    assert caught.value.reason.endswith(f"allowed: {allowed}")


# -- adapters ------------------------------------------------------------------------------------
def test_loras_take_their_scale_or_the_adapters_default_and_are_sorted_by_name():
    params = resolve(request(loras=[{"name": "style", "scale": 0.5}, {"name": "ink"}]), SDXL)
    assert params.loras == (("ink", 0.7), ("style", 0.5))


@pytest.mark.parametrize(
    ("loras", "words"),
    [
        pytest.param([{"name": "nope"}], "unknown adapter 'nope'; this model's adapters: style, ink, third",
                     id="unknown-adapter"),
        pytest.param([{"name": "style"}, {"name": "style"}], "named twice", id="named-twice"),
        pytest.param([{"name": "style"}, {"name": "ink"}, {"name": "third"}], "maximum of 2", id="over-max-adapters"),
    ],
)
def test_bad_loras_are_a_422_naming_loras(loras, words):
    with pytest.raises(InvalidField) as caught:
        resolve(request(loras=loras), SDXL)
    assert caught.value.field == ("loras.0.name" if "unknown" in words else "loras") and words in caught.value.reason


def test_a_lora_scale_out_of_range_is_refused_by_the_schema():
    with pytest.raises(ValueError, match="scale"):
        request(loras=[{"name": "style", "scale": 5}])
