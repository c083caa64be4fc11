"""The model-family registry: a plain dict from a family key to its declaration (``Family``).

Each family lives in one file of this package, which declares everything about it with keyword
fields (pipeline class, size multiple, defaults, memory estimate, negative-prompt support, tiny
builder, full-size builder for the GPU benchmark) next to its handler. Adding a family = one new
module + one line in ``FAMILIES``. Import-light (no torch, no diffusers): the schema, the router
and the operator read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyimg.families import flux, sdxl
from tinyimg.families.family import Family

if TYPE_CHECKING:
    from tinyimg.families.base import Handler

FAMILIES: dict[str, Family] = {
    "sdxl": sdxl.FAMILY,
    "flux": flux.FAMILY,
}


def family_info(key: str) -> Family:
    try:
        return FAMILIES[key]
    except KeyError:
        raise KeyError(f"unknown family {key!r}; known: {', '.join(sorted(FAMILIES))}") from None


def load_handler_class(key: str) -> type[Handler]:
    return family_info(key).handler
