"""An image's provenance, applied as it is encoded: the watermark into its pixels, then its
parameters and the AI-generated mark into the file (``tinyimg.provenance.metadata``). Runs where
images are encoded (a worker thread, off the event loop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tinyimg import imaging
from tinyimg.provenance.metadata import build_xmp, dump_parameters
from tinyimg.provenance.watermark import MarkSkipped, build_payload, embed

PROMPT_FIELDS = ("prompt", "negative_prompt")


@dataclass(frozen=True)
class Stamp:
    """What a model's provenance settings put into each image of one job."""

    parameters: dict[str, Any] | None  # the job's (each image adds its seed); None: none in the file
    watermark: bytes | None  # the payload; None: no watermark
    generator: str  # the XMP's CreatorTool: "tinyimg <model>@<revision>"


def build_stamp(settings: Any, parameters: dict[str, Any], model: str, revision: str | None) -> Stamp | None:
    """The stamp for a job from its model's ``ProvenanceSpec`` and its parameters (None: nothing to
    add). The prompt goes in only with ``includePrompt``."""
    if not settings.parameters and not settings.watermark:
        return None
    carried = None
    if settings.parameters:
        carried = {k: v for k, v in parameters.items() if settings.include_prompt or k not in PROMPT_FIELDS}
        carried.update({"model": model, "revision": revision})
    payload = build_payload(settings.watermark_text) if settings.watermark else None
    return Stamp(carried, payload, f"tinyimg {model}@{revision or 'local'}")


def finish_image(image: Any, seed: int, output_format: str, stamp: Stamp | None) -> bytes:
    """The image's bytes as answered: watermarked (when it is large enough) and with its metadata."""
    if stamp is None:
        return imaging.encode_image(image, output_format)
    if stamp.watermark is not None:
        try:
            image = embed(image, stamp.watermark)
        except MarkSkipped:
            pass  # under 256 px on a side: the transform needs more pixels (the docs say so)
    if stamp.parameters is None:
        return imaging.encode_image(image, output_format)
    parameters = {**stamp.parameters, "seed": seed}
    return imaging.encode_image(image, output_format, parameters=dump_parameters(parameters),
                                xmp=build_xmp(parameters, stamp.generator))


def finish_images(images: Sequence[Any], seeds: Sequence[int], output_format: str, stamp: Stamp | None) -> list[bytes]:
    return [finish_image(image, seed, output_format, stamp) for image, seed in zip(images, seeds, strict=True)]
