"""An image's provenance, applied as it is encoded: the watermark into its pixels, then its
parameters and the AI-generated mark into the file (``tinyimg.provenance.metadata``). Runs where
images are encoded (a worker thread, off the event loop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tinyimg import imaging
from tinyimg.provenance.manifest import SigningKey, sign_image
from tinyimg.provenance.metadata import build_xmp, dump_parameters
from tinyimg.provenance.watermark import MarkSkipped, build_payload, embed

PROMPT_FIELDS = ("prompt", "negative_prompt")


@dataclass(frozen=True)
class Stamp:
    """What a model's provenance settings put into each image of one job."""

    parameters: dict[str, Any] | None  # the job's (each image adds its seed); None: none in the file
    watermark: bytes | None  # the payload; None: no watermark
    generator: str  # the XMP's CreatorTool and the manifest's software agent: "tinyimg <model>@<revision>"
    signing: SigningKey | None = None  # sign a C2PA manifest into each image


def build_stamp(settings: Any, parameters: dict[str, Any], model: str, revision: str | None,
                signing: SigningKey | None = None) -> Stamp | None:
    """The stamp for a job from its model's ``ProvenanceSpec`` and its parameters (None: nothing to
    add). The prompt goes in only with ``includePrompt``; ``signing`` is used with ``c2pa``."""
    if not settings.parameters and not settings.watermark and not settings.c2pa:
        return None
    carried = None
    if settings.parameters:
        carried = {k: v for k, v in parameters.items() if settings.include_prompt or k not in PROMPT_FIELDS}
        carried.update({"model": model, "revision": revision})
    payload = build_payload(settings.watermark_text) if settings.watermark else None
    return Stamp(carried, payload, f"tinyimg {model}@{revision or 'local'}", signing if settings.c2pa else None)


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
        data = imaging.encode_image(image, output_format)
    else:
        parameters = {**stamp.parameters, "seed": seed}
        data = imaging.encode_image(image, output_format, parameters=dump_parameters(parameters),
                                    xmp=build_xmp(parameters, stamp.generator))
    if stamp.signing is not None:  # last: the manifest's hash covers every byte before it
        data = sign_image(data, imaging.media_type(output_format), stamp.signing, stamp.generator)
    return data


def finish_images(images: Sequence[Any], seeds: Sequence[int], output_format: str, stamp: Stamp | None) -> list[bytes]:
    return [finish_image(image, seed, output_format, stamp) for image, seed in zip(images, seeds, strict=True)]
