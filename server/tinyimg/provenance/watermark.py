"""The invisible watermark: a short payload hidden in an image's pixels, read back after the image
was saved as PNG or as JPEG at quality 90.

invisible-watermark (``imwatermark``, the library diffusers watermarks SDXL images with) does the
signal processing. Its DWT-DCT method, diffusers' choice, did not survive a JPEG at quality 90 in
our measurements; its DWT-DCT-SVD variant did, so that is the method here. The payload is the first
4 bytes of SHA-256 of the deployment's watermark text, written 3 times (96 bits) and read back by a
majority vote per bit, so a few flipped bits do not lose it. Images under 256 pixels on a side are
too small for the transform and are left unmarked (``MarkSkipped``).

The library is imported only when a model turns the watermark on (it needs OpenCV).
"""

from __future__ import annotations

import hashlib
from typing import Any

METHOD = "dwtDctSvd"
MIN_SIDE = 256
PAYLOAD_BYTES = 4
REPEAT = 3
SCALE = 36  # the strength on the blue-difference channel: invisible (mean change ~1/255), survives JPEG 90


class MarkSkipped(ValueError):
    """The image cannot carry the watermark (too small)."""


def build_payload(text: str) -> bytes:
    """The bits a deployment writes: a hash of its watermark text (any length in, 4 bytes out)."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:PAYLOAD_BYTES]


def _repeat(payload: bytes) -> bytes:
    return payload * REPEAT


def _vote(bits: bytes) -> bytes:
    """The majority of the ``REPEAT`` copies, bit by bit."""
    copies = [bits[i * PAYLOAD_BYTES:(i + 1) * PAYLOAD_BYTES] for i in range(REPEAT)]
    out = bytearray(PAYLOAD_BYTES)
    for byte in range(PAYLOAD_BYTES):
        for bit in range(8):
            ones = sum((copy[byte] >> bit) & 1 for copy in copies)
            if ones * 2 > REPEAT:
                out[byte] |= 1 << bit
    return bytes(out)


def check_size(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise MarkSkipped(f"{width}x{height} is under {MIN_SIDE} pixels on a side: too small for the watermark")


def embed(image: Any, payload: bytes) -> Any:
    """``image`` (PIL, RGB) with ``payload`` hidden in it; MarkSkipped when it is too small."""
    import numpy as np
    from imwatermark import WatermarkEncoder
    from PIL import Image

    check_size(*image.size)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", _repeat(payload))
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    marked = encoder.encode(bgr, METHOD, scales=[0, SCALE, 0])
    return Image.fromarray(np.ascontiguousarray(marked[:, :, ::-1]))


def read_payload(image: Any) -> bytes | None:
    """The payload an image carries (whatever it is: compare with ``build_payload``), or None when
    the image is too small to carry one."""
    import numpy as np
    from imwatermark import WatermarkDecoder

    try:
        check_size(*image.size)
    except MarkSkipped:
        return None
    decoder = WatermarkDecoder("bytes", PAYLOAD_BYTES * REPEAT * 8)
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    return _vote(bytes(decoder.decode(bgr, METHOD)))
