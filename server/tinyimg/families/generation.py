"""What a family's handler is called with and answers: one request, fully resolved
(``GenerationParams``), and one image made (``GeneratedImage``); and which requests may share one
pipeline call (``batch_key``). The engine queues these; the job service builds them. No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenerationParams:
    """One request, fully resolved (defaults applied, limits checked)."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    seeds: tuple[int, ...]  # one per image; len(seeds) == number of images
    request_id: str = ""
    mode: str = "txt2img"  # txt2img | img2img | inpaint
    strength: float | None = None  # img2img and inpaint: how much of the input is re-noised
    scheduler: str | None = None  # a name of the family's table; None: the model's own
    loras: tuple[tuple[str, float], ...] = ()  # (adapter, scale), sorted by name
    # img2img/inpaint inputs (PIL images, already width x height): each request keeps its own in a
    # batch, so they are not part of equality or the batch key.
    image: Any = field(default=None, compare=False, repr=False)
    mask: Any = field(default=None, compare=False, repr=False)


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int


def batch_key(params: GenerationParams) -> tuple[Any, ...]:
    """What must match for requests to share one pipeline call: everything that changes the
    computation for the whole call. Prompts, seeds and input images may differ (each image gets
    its own embeddings, generator and input)."""
    return (
        params.mode,
        params.width,
        params.height,
        params.steps,
        params.guidance_scale,
        params.scheduler,
        params.loras,
        params.strength,
    )
