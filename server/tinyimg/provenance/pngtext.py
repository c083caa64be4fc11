"""A PNG's text chunk: generation parameters travel inside the image file itself (pure, no PIL).

An ``iTXt`` chunk (UTF-8, uncompressed) goes right before ``IEND``; readers such as PIL
(``Image.open(f).text``), exiftool and the common image UIs show it. Keyword ``parameters``, as
other image tools use. Other formats are returned unchanged (their object metadata says it)."""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def build_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def add_png_text(data: bytes, keyword: str, text: str) -> bytes:
    """``data`` with one more ``iTXt`` chunk; ``data`` itself when it is not a PNG ending in IEND."""
    if not data.startswith(PNG_SIGNATURE) or not data.endswith(IEND):
        return data
    # keyword \0, compression flag 0, method 0, language tag "" \0, translated keyword "" \0, text
    body = keyword.encode("latin-1") + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")
    return data[: -len(IEND)] + build_chunk(b"iTXt", body) + IEND


def has_png_text(data: bytes, keyword: str) -> bool:
    """Whether a PNG already holds a text chunk named ``keyword`` (tEXt, zTXt or iTXt)."""
    if not data.startswith(PNG_SIGNATURE):
        return False
    at = len(PNG_SIGNATURE)
    name = keyword.encode("latin-1") + b"\x00"
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind in (b"tEXt", b"zTXt", b"iTXt") and data[at + 8:at + 8 + len(name)] == name:
            return True
        if kind == b"IEND":
            return False
        at += 12 + length
    return False
