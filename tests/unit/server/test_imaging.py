"""Image encoding: each format decodes back to the same size, PNG losslessly."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tinyimg.imaging import encode_image, media_type


def gradient(width: int = 48, height: int = 32) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 5 % 256, y * 7 % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    return image


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_encode_image_writes_the_format_at_the_same_size(fmt, magic):
    data = encode_image(gradient(), fmt)
    assert data.startswith(magic)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert decoded.size == (48, 32)


def test_png_is_lossless():
    image = gradient()
    assert Image.open(io.BytesIO(encode_image(image, "png"))).convert("RGB").tobytes() == image.tobytes()


def test_media_types():
    assert [media_type(f) for f in ("png", "jpeg", "webp")] == ["image/png", "image/jpeg", "image/webp"]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown image format 'gif'"):
        encode_image(gradient(), "gif")
