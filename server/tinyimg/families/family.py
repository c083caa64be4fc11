"""What a model family declares: one ``Family`` per family file, registered in ``FAMILIES``.

Import-light on purpose (no torch, no diffusers): the schema, the router and the operator read the
registry. Builders and handlers import their heavy modules inside their functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tinyimg.families.base import Handler

from tinyimg.families.schedulers import SchedulerChoice

MODES = ("txt2img", "img2img", "inpaint")


@dataclass(frozen=True, kw_only=True)
class Family:
    handler: type[Handler]  # a tinyimg.families.base.Handler subclass: prompt encoding and call arguments
    pipeline_class: str  # the diffusers class from_pretrained loads (an attribute of diffusers)
    denoiser: Literal["unet", "transformer"]  # the pipeline attribute runtime.compile wraps
    size_multiple: int  # width/height must be a multiple of this (VAE factor x patch size)
    negative_prompt: bool  # whether the pipeline honours negative_prompt (else the API answers 422)
    default_steps: int
    default_guidance: float
    default_size: int
    memory_gb_bf16: float  # weights + working memory at 16-bit, for placing a Hub model before loading it
    gpu_dtype: Literal["float16", "bfloat16"]  # what dtype "auto" means on a GPU
    build_tiny: Callable[[], Any]  # a seeded tiny random-weight pipeline (tests, demo, make-tiny-model)
    build_full: Callable[[str, Any], Any] | None = None  # (device, dtype) -> the full-size architecture
    # with random weights, for the GPU benchmark; None: the family is not benchmarked
    # The image-to-image and inpainting pipelines (diffusers class names), built with from_pipe over
    # the loaded text-to-image pipeline's components; None: the family does not offer that mode.
    img2img_pipeline_class: str | None = None
    inpaint_pipeline_class: str | None = None
    # The samplers a request may name (tinyimg.families.schedulers); empty: only the model's own.
    schedulers: Mapping[str, SchedulerChoice] = field(default_factory=dict)
    # The denoiser modules a LoRA adapts (what ``tinyimg make-tiny-lora`` targets).
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    def __post_init__(self) -> None:
        # The handler class learns its family here, once: it then needs no registry lookup.
        self.handler.family = self

    @property
    def modes(self) -> tuple[str, ...]:
        offered = {"txt2img": True, "img2img": bool(self.img2img_pipeline_class),
                   "inpaint": bool(self.inpaint_pipeline_class)}
        return tuple(mode for mode in MODES if offered[mode])

    def mode_pipeline_class(self, mode: str) -> str | None:
        return {"txt2img": self.pipeline_class, "img2img": self.img2img_pipeline_class,
                "inpaint": self.inpaint_pipeline_class}[mode]
