"""The wire shapes of the HTTP API and the pure step from a request to engine parameters.

Field names are snake_case on the wire, as DESIGN.md lists them for ``/generate``. Type errors are
pydantic's (422 through FastAPI); limits depend on the model's spec, so they are checked after the
model is known, by ``build_generation_params``, which names the offending field.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tinyimg.errors import InvalidField
from tinyimg.families import family_info
from tinyimg.runtime.jobs import GenerationParams
from tinyimg.spec import ModelSpec

OutputFormat = Literal["png", "jpeg", "webp"]
# Seeds feed torch.Generator.manual_seed; keep seed + num_images inside a signed 64-bit range.
MAX_SEED = 2**63 - 1 - 64


def check_unicode(text: str) -> str:
    """JSON can carry a lone UTF-16 surrogate ("\\ud800") that no encoder accepts: the tokenizer
    or the log would fail later, for the whole batch. Refuse it here, naming the field."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"not valid Unicode text (character {err.start} is a lone surrogate)") from None
    return text


Text = Annotated[str, AfterValidator(check_unicode)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(_Wire):
    model: str = Field(min_length=1, max_length=100)
    prompt: Text
    negative_prompt: Text | None = None
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0.0, le=100.0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Absent: random. Image i gets seed + i.")
    num_images: int = Field(1, ge=1)
    output_format: OutputFormat = "png"


class ImageResponse(_Wire):
    b64: str
    seed: int
    format: OutputFormat


class ParametersResponse(_Wire):
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    num_images: int
    output_format: OutputFormat


class TimingsResponse(_Wire):
    queued_seconds: float
    inference_seconds: float
    total_seconds: float


class GenerateResponse(_Wire):
    model: str
    images: list[ImageResponse]
    parameters: ParametersResponse
    timings: TimingsResponse
    device: str
    batch_size: int
    request_id: str


class OpenAIImagesRequest(BaseModel):
    """The subset of OpenAI's ``POST /v1/images/generations`` that maps onto ``/generate``."""

    # Unknown OpenAI fields (quality, style, user, ...) are accepted and ignored, as clients send them.
    model_config = ConfigDict(extra="ignore")

    prompt: Text
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = Field(None, pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$", description='"WIDTHxHEIGHT"')
    response_format: Literal["b64_json"] = "b64_json"
    output_format: OutputFormat = "png"


class OpenAIImageData(_Wire):
    b64_json: str
    revised_prompt: str | None = None


class OpenAIImagesResponse(_Wire):
    created: int
    data: list[OpenAIImageData]
    output_format: OutputFormat


def build_generation_params(
    req: GenerateRequest, spec: ModelSpec, request_id: str = "", seed: int | None = None
) -> GenerationParams:
    """Apply the model's defaults and check its limits; ``seed`` stands in for an absent request seed."""
    d, lim = spec.resolved_defaults(), spec.limits
    info = family_info(spec.family)
    width = req.width if req.width is not None else d.width
    height = req.height if req.height is not None else d.height
    steps = req.steps if req.steps is not None else d.steps
    for field, value, top in (("width", width, lim.max_width), ("height", height, lim.max_height)):
        if value > top:
            raise InvalidField(field, f"{value} is over this model's maximum of {top}")
        if value % info.size_multiple:
            raise InvalidField(field, f"{value} is not a multiple of {info.size_multiple} ({spec.family} models)")
    if steps > lim.max_steps:
        raise InvalidField("steps", f"{steps} is over this model's maximum of {lim.max_steps}")
    if req.num_images > lim.max_images:
        raise InvalidField("num_images", f"{req.num_images} is over this model's maximum of {lim.max_images}")
    if len(req.prompt) > lim.max_prompt_length:
        raise InvalidField(
            "prompt", f"{len(req.prompt)} characters is over this model's maximum of {lim.max_prompt_length}"
        )
    negative = req.negative_prompt if req.negative_prompt is not None else d.negative_prompt
    if req.negative_prompt and not info.negative_prompt:
        raise InvalidField("negative_prompt", f"{spec.family} models do not support a negative prompt")
    if negative is not None and len(negative) > lim.max_prompt_length:
        raise InvalidField(
            "negative_prompt", f"{len(negative)} characters is over this model's maximum of {lim.max_prompt_length}"
        )
    first = req.seed if req.seed is not None else (seed if seed is not None else new_seed())
    return GenerationParams(
        prompt=req.prompt,
        negative_prompt=negative if info.negative_prompt else None,
        width=width,
        height=height,
        steps=steps,
        guidance_scale=req.guidance_scale if req.guidance_scale is not None else d.guidance_scale,
        seeds=tuple(first + i for i in range(req.num_images)),
        request_id=request_id,
    )


def new_seed() -> int:
    return secrets.randbelow(2**32)


def build_parameters_response(params: GenerationParams, output_format: OutputFormat) -> ParametersResponse:
    return ParametersResponse(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=params.width,
        height=params.height,
        steps=params.steps,
        guidance_scale=params.guidance_scale,
        seed=params.seeds[0],
        num_images=len(params.seeds),
        output_format=output_format,
    )


def build_generate_request(req: OpenAIImagesRequest, default_model: str) -> GenerateRequest:
    """Translate the OpenAI shape; an OpenAI ``size`` becomes width and height."""
    width = height = None
    if req.size is not None:
        width, height = (int(part) for part in req.size.split("x"))
    return GenerateRequest(
        model=req.model or default_model,
        prompt=req.prompt,
        width=width,
        height=height,
        num_images=req.n,
        output_format=req.output_format,
    )
