"""Encode generated images to PNG, JPEG or WebP bytes."""

from __future__ import annotations

import io
from typing import Any

FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
QUALITY = 90  # JPEG/WebP: visually clean at about a tenth of PNG's size
# zlib level 1, not PIL's 6: a 1024x1024 photo-like image encodes in about half the time for ~9%
# more bytes (BENCHMARKS.md); still lossless. At 64x64 the level makes no measurable difference.
PNG_COMPRESS_LEVEL = 1


def media_type(output_format: str) -> str:
    return FORMATS[output_format][1]


def encode_image(image: Any, output_format: str = "png", parameters: str | None = None, xmp: bytes | None = None) -> bytes:
    """``image`` is a PIL image; ``output_format`` is png, jpeg or webp. ``parameters`` (PNG: an
    ``iTXt`` chunk of that name) and ``xmp`` (an XMP packet; PNG: its ``XML:com.adobe.xmp``
    chunk) go into the file (``tinyimg.provenance``)."""
    try:
        pil_format, _ = FORMATS[output_format]
    except KeyError:
        raise ValueError(f"unknown image format {output_format!r}; known: {', '.join(FORMATS)}") from None
    buffer = io.BytesIO()
    options: dict[str, Any] = {"compress_level": PNG_COMPRESS_LEVEL} if pil_format == "PNG" else {"quality": QUALITY}
    if pil_format == "PNG" and (parameters is not None or xmp is not None):
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        if parameters is not None:
            info.add_itxt("parameters", parameters)
        if xmp is not None:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"))
        options["pnginfo"] = info
    elif xmp is not None:
        options["xmp"] = xmp
    image.convert("RGB").save(buffer, format=pil_format, **options)
    return buffer.getvalue()
