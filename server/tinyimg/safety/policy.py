"""What happens to a scored image (pure but for the blur): the content flag it carries, and the
policy's verdict for a request (flag, blur, block); the prompt deny-list."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from tinyimg.core.errors import ApiError


class ContentBlocked(ApiError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, 422, "content_blocked", extra={"field": field} if field else None)


def build_flag(score: float, threshold: float, checker: str) -> dict[str, Any]:
    return {"flagged": score >= threshold, "score": round(score, 6), "checker": checker}


def blur(image: Any) -> Any:
    """Past recognition: a Gaussian blur with a radius of 1/16 of the longer side."""
    from PIL import ImageFilter

    return image.filter(ImageFilter.GaussianBlur(max(2, max(image.size) // 16)))


def apply_policy(policy: str, images: Sequence[Any], flags: Sequence[dict[str, Any]]) -> list[Any]:
    """The images as answered under ``policy``; ContentBlocked when it blocks a flagged image."""
    flagged = [i for i, flag in enumerate(flags) if flag["flagged"]]
    if policy == "block" and flagged:
        raise ContentBlocked(f"{len(flagged)} of the {len(flags)} images were flagged by the content check; "
                             "nothing was kept")
    if policy == "blur":
        return [blur(image) if flags[i]["flagged"] else image for i, image in enumerate(images)]
    return list(images)


@lru_cache(maxsize=64)
def compile_deny_list(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any phrase as whole words (None: no deny-list)."""
    cleaned = [p.strip() for p in phrases if p.strip()]
    if not cleaned:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in cleaned) + r")(?!\w)", re.IGNORECASE)


def check_prompts(pattern: re.Pattern[str] | None, prompt: str, negative_prompt: str | None) -> None:
    if pattern is None:
        return
    for field, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if text and pattern.search(text):
            raise ContentBlocked(f"{field}: contains a phrase this model refuses", field)
