"""The model-family registry: a family key -> what the rest of the code needs to know about it.

This module must stay import-light (no torch, no diffusers): the schema, the router and the
operator read it. The handler class is named by an import path and loaded only by the server.
Adding a family = one new module in this package + one line in ``FAMILIES``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyInfo:
    handler: str  # "module:Class", imported lazily by load_handler_class()
    size_multiple: int  # width/height must be a multiple of this (VAE factor x patch size)
    negative_prompt: bool  # whether the pipeline honours negative_prompt
    default_steps: int
    default_guidance: float
    default_size: int
    memory_gb_bf16: float  # weights + working memory at 16-bit, for placement on real models


FAMILIES: dict[str, FamilyInfo] = {
    "sdxl": FamilyInfo("tinyimg.families.sdxl:SDXLHandler", 8, True, 30, 5.0, 1024, 10.0),
    "flux": FamilyInfo("tinyimg.families.flux:FluxHandler", 16, False, 4, 0.0, 1024, 34.0),
}


def family_info(key: str) -> FamilyInfo:
    try:
        return FAMILIES[key]
    except KeyError:
        raise KeyError(f"unknown family {key!r}; known: {', '.join(sorted(FAMILIES))}") from None


def load_handler_class(key: str) -> type:
    import importlib

    module_name, _, class_name = family_info(key).handler.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
