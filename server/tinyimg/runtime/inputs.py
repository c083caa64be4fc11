"""Input images for image-to-image and inpainting: bytes -> a bounded, oriented, sized PIL image.

The rule (docs, The HTTP API: "Image-to-image and inpainting"):
1. PNG, JPEG or WebP only. The header is read first; an image whose header says more pixels than
   the model's ``limits.maxInputPixels`` is refused (413) before any pixel is decoded, so a small
   file that claims 100000x100000 costs nothing.
2. EXIF orientation is applied (a phone photo comes out the way it was shot).
3. The output size is the request's ``width``/``height``; a side the request leaves out takes the
   input's, scaled down (keeping the aspect) to fit the model's maximum size, and rounded down to
   the family's multiple. The input is resized to exactly that size.
4. A mask must have the input's size (before resizing); white = repaint, black = keep.

Every failure is an ``InvalidField`` (422) or a 413 naming the field, never a 500. Pillow is
imported inside the functions: the router imports the request models but never decodes images.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Any

from tinyimg.core.errors import ApiError, InvalidField

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")


class InputTooLarge(ApiError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}", 413, "payload_too_large", extra={"field": field})


def read_base64(field: str, text: str) -> bytes:
    """Plain base64, or a ``data:image/...;base64,`` URL as browsers make them."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(field, "not valid base64") from None


def open_image(field: str, data: bytes, max_pixels: int) -> Any:
    """The decoded image, orientation applied; the size is checked on the header alone."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow's warning bound: ours, checked next, is the one that counts
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise InvalidField(field, f"not a {', '.join(f.lower() for f in ACCEPTED_FORMATS)} image") from None
    except Image.DecompressionBombError as err:  # Pillow's own bound, far above ours
        raise InputTooLarge(field, str(err)) from None
    except (OSError, ValueError) as err:
        raise InvalidField(field, f"unreadable image: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise InputTooLarge(field, f"{width}x{height} is over this model's maximum of {max_pixels} input pixels")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # truncated, corrupt
        raise InvalidField(field, f"unreadable image: {err}") from None
    return image


def fit_size(size: tuple[int, int], max_size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``size`` scaled down (aspect kept) to fit ``max_size``, each side rounded down to ``multiple``."""
    width, height = size
    shrink = min(1.0, max_size[0] / width, max_size[1] / height)
    return (int(width * shrink) // multiple * multiple, int(height * shrink) // multiple * multiple)


def read_mask_from_alpha(image: Any) -> Any | None:
    """OpenAI's convention: fully transparent pixels are the ones to repaint. Returns an L mask
    (white = repaint), or None when the image has no transparent pixel."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return None
    alpha = image.convert("RGBA").getchannel("A")
    mask = alpha.point(lambda a: 255 if a == 0 else 0)
    return mask if mask.getbbox() is not None else None
