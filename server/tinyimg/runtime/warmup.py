"""The warm-up of one replica, on its device's thread, right after its load.

1. With an acceleration that changes the computation: the model's default request at seed 0 on the
   plain pipeline, as the reference image (before anything is applied: no second copy of the model).
2. The acceleration is applied (tinyimg.families.acceleration).
3. Every shape bucket of ``runtime.warmupShapes`` runs once (one step, each size x batch): the
   first call compiles, each new shape specialises, so none of it happens in the middle of traffic.
4. The default request again, timed: the model's seconds per image; against the reference its
   PSNR is the acceleration's quality. Under ``minQuality`` the replica refuses to serve
   (``AccelerationQuality``).

Startup phases (download, load, compile, warmup) are timed in seconds for the log, /status and
metrics; ``compile`` is the first warm-up call of a compiled model (compilation happens there).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tinyimg.core.status import ACCELERATION_QUALITY
from tinyimg.families.acceleration import AccelerationError, measure_psnr
from tinyimg.families.base import GenerationParams

if TYPE_CHECKING:
    from tinyimg.families.base import Handler
    from tinyimg.spec import ModelSpec

log = logging.getLogger("tinyimg.engine")


Shape = tuple[int, int, int]  # width, height, images in one pipeline call


class AccelerationQualityError(AccelerationError):
    """The accelerated pipeline's image is too far from the plain one's."""


@dataclass
class WarmupReport:
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    seconds_per_image: float | None = None
    quality: float | None = None  # PSNR (dB) against the plain pipeline; None: nothing was changed
    shapes: set[Shape] = field(default_factory=set)  # warmed: a compiled model runs these without recompiling

    def acceleration(self) -> dict[str, float | None]:
        """What /models and the ImageModel's status report."""
        return {"seconds_per_image": self.seconds_per_image, "quality": self.quality}


def build_warmup_shapes(spec: ModelSpec, compiled: bool = False) -> list[Shape]:
    """``runtime.warmupShapes``, or the default size at batch 1; compiled, at every batch size up to
    maxBatchSize (each is its own static graph: one left out compiles in the middle of traffic,
    which on the CPU took a tiny SDXL from 10 to 0.4 images/s while it lasted)."""
    if spec.runtime.warmup_shapes:
        return [(s.width, s.height, s.batch) for s in spec.runtime.warmup_shapes]
    d = spec.resolved_defaults()
    return [(d.width, d.height, batch) for batch in range(1, (spec.runtime.max_batch_size if compiled else 1) + 1)]


def build_default_request(spec: ModelSpec) -> GenerationParams:
    """The model's default request: one image, seed 0 (what seconds per image and quality measure)."""
    d = spec.resolved_defaults()
    return GenerationParams("warm-up", d.negative_prompt, d.width, d.height, d.steps, d.guidance_scale, (0,), "warm-up")


def build_shape_request(spec: ModelSpec, shape: Shape) -> GenerationParams:
    width, height, images = shape
    return replace(build_default_request(spec), width=width, height=height, steps=1, seeds=tuple(range(images)))


def warm_up(handler: Handler) -> WarmupReport:
    spec, accel = handler.spec, handler.acceleration
    report = WarmupReport(phases=dict(handler.phases))
    default = build_default_request(spec)
    started = time.perf_counter()
    reference = None if accel.plain else _first_image(handler, default)
    handler.accelerate()
    for index, shape in enumerate(build_warmup_shapes(spec, compiled=accel.compile != "none")):
        began = time.perf_counter()
        handler.generate([build_shape_request(spec, shape)])
        report.shapes.add(shape)
        if index == 0 and accel.compile != "none":
            report.phases["compile"] = round(time.perf_counter() - began, 3)
    began = time.perf_counter()
    image = _first_image(handler, default)
    report.seconds_per_image = round(time.perf_counter() - began, 4)
    report.phases["warmup"] = round(time.perf_counter() - started - report.phases.get("compile", 0.0), 3)
    if reference is not None:
        report.quality = round(measure_psnr(reference, image), 2)
        if report.quality < accel.min_quality:
            raise AccelerationQualityError(
                f"{ACCELERATION_QUALITY}: the accelerated pipeline's image is {report.quality} dB PSNR from the plain"
                f" one's (runtime.acceleration.minQuality {accel.min_quality}); acceleration {accel.describe()}")
    log.info("warmed up", extra={"model": spec.name, "device": handler.device, "phases": report.phases,
                                 "shapes": sorted(report.shapes), **report.acceleration()})
    return report


def _first_image(handler: Handler, params: GenerationParams) -> Any:
    return handler.generate([params])[0][0].image
