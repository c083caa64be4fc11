"""The wire shapes of the HTTP API and the pure step from a request to engine parameters.

Field names are snake_case on the wire, as DESIGN.md lists them for ``/generate``. Type errors are
pydantic's (422 through FastAPI); limits depend on the model's spec, so they are checked after the
model is known, by ``build_generation_params``, which names the offending field.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tinyimg.api.inputs import fit_size, open_image, read_base64
from tinyimg.errors import InvalidField
from tinyimg.families import family_info
from tinyimg.runtime.jobs import GenerationParams
from tinyimg.spec import ADAPTER_SCALE_RANGE, ModelSpec

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


# Adapters named in one request; the model's limits.maxAdapters is the real bound.
MAX_LORAS = 16
# A base64 field is bounded by the body limit (max_body_bytes) before it is parsed.
DEFAULT_STRENGTH = {"img2img": 0.8, "inpaint": 1.0}


class LoraRequest(_Wire):
    name: str = Field(min_length=1, max_length=64)
    scale: float | None = Field(
        None, ge=ADAPTER_SCALE_RANGE[0], le=ADAPTER_SCALE_RANGE[1], description="Absent: the adapter's default."
    )


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
    image: str | None = Field(
        None, description="base64 PNG/JPEG/WebP (or a data: URL): image-to-image, or inpainting with mask."
    )
    mask: str | None = Field(None, description="base64 image the size of image: white = repaint, black = keep.")
    strength: float | None = Field(
        None, gt=0.0, le=1.0, description="With image: how much of it is re-noised (img2img 0.8, inpaint 1.0)."
    )
    scheduler: str | None = Field(
        None, min_length=1, max_length=64, description="A name from the model's schedulers (/models); absent: its own."
    )
    loras: list[LoraRequest] | None = Field(None, max_length=MAX_LORAS, description="Adapters from /models.")


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
    mode: str = "txt2img"
    strength: float | None = None
    scheduler: str | None = None
    loras: list[LoraRequest] = []


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
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: OutputFormat = "png"
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Absent: random. Image i gets seed + i.")


class OpenAIImageData(_Wire):
    b64_json: str | None = None
    url: str | None = None  # response_format "url": the job's image, kept for the jobs' result TTL
    revised_prompt: str | None = None


class OpenAIImagesResponse(_Wire):
    created: int
    data: list[OpenAIImageData]
    output_format: OutputFormat


def build_generation_params(
    req: GenerateRequest, spec: ModelSpec, request_id: str = "", seed: int | None = None
) -> GenerationParams:
    """Apply the model's defaults and check its limits; ``seed`` stands in for an absent request seed.

    With ``image``, this decodes it (a CPU step of milliseconds to tens of them: callers on an event
    loop run it in a thread) and sizes the output by the rule of ``tinyimg.api.inputs``."""
    d, lim = spec.resolved_defaults(), spec.limits
    info = family_info(spec.family)
    inputs = read_inputs(req, spec)
    fitted = fit_size(inputs[0].size, (lim.max_width, lim.max_height), info.size_multiple) if inputs else None
    width = req.width if req.width is not None else fitted[0] if fitted else d.width
    height = req.height if req.height is not None else fitted[1] if fitted else d.height
    if inputs and min(width, height) < info.size_multiple:
        raise InvalidField("image", f"{inputs[0].size[0]}x{inputs[0].size[1]} is too small for this model")
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
    mode = ("inpaint" if inputs[1] is not None else "img2img") if inputs else "txt2img"
    strength = build_strength(req, mode, steps)
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
        mode=mode,
        strength=strength,
        scheduler=check_scheduler(req.scheduler, spec),
        loras=build_loras(req.loras, spec),
        image=inputs[0].convert("RGB").resize((width, height), LANCZOS) if inputs else None,
        mask=inputs[1].convert("L").resize((width, height), NEAREST) if inputs and inputs[1] is not None else None,
    )


# PIL.Image.Resampling values, named here so this module need not import Pillow.
LANCZOS, NEAREST = 1, 0


def read_inputs(req: GenerateRequest, spec: ModelSpec) -> tuple[Any, Any | None] | None:
    """The decoded input image and mask, or None for text-to-image."""
    if req.image is None:
        for field in ("mask", "strength"):
            if getattr(req, field) is not None:
                raise InvalidField(field, "applies only with an input image (image)")
        return None
    info = family_info(spec.family)
    mode = "inpaint" if req.mask is not None else "img2img"
    if mode not in info.modes:
        raise InvalidField("mask" if req.mask is not None else "image", f"{spec.family} models do not offer {mode}")
    limit = spec.limits.max_input_pixels
    image = open_image("image", read_base64("image", req.image), limit)
    mask = None
    if req.mask is not None:
        mask = open_image("mask", read_base64("mask", req.mask), limit)
        if mask.size != image.size:
            raise InvalidField(
                "mask", f"{mask.size[0]}x{mask.size[1]} is not the image's size {image.size[0]}x{image.size[1]}"
            )
    return image, mask


def build_strength(req: GenerateRequest, mode: str, steps: int) -> float | None:
    if mode == "txt2img":
        return None
    strength = req.strength if req.strength is not None else DEFAULT_STRENGTH[mode]
    # diffusers runs int(steps * strength) of the steps; none at all is an error deep in the pipeline.
    if int(steps * strength) < 1:
        raise InvalidField("strength", f"{strength} x {steps} steps leaves no denoising step; raise either")
    return strength


def check_scheduler(name: str | None, spec: ModelSpec) -> str | None:
    allowed = family_info(spec.family).schedulers
    if name is not None and name not in allowed:
        listed = ", ".join(allowed) or "none (only the model's own)"
        raise InvalidField("scheduler", f"{name!r} is not offered for {spec.family} models; allowed: {listed}")
    return name


def build_loras(loras: list[LoraRequest] | None, spec: ModelSpec) -> tuple[tuple[str, float], ...]:
    """(name, scale) per named adapter, sorted by name (the batch key compares them)."""
    if not loras:
        return ()
    declared = {a.name: a for a in spec.adapters}
    if len(loras) > spec.limits.max_adapters:
        raise InvalidField("loras", f"{len(loras)} adapters is over this model's maximum of {spec.limits.max_adapters}")
    chosen: dict[str, float] = {}
    for lora in loras:
        if lora.name not in declared:
            raise InvalidField(
                "loras", f"unknown adapter {lora.name!r}; this model's adapters: {', '.join(declared) or 'none'}"
            )
        if lora.name in chosen:
            raise InvalidField("loras", f"adapter {lora.name!r} is named twice")
        chosen[lora.name] = lora.scale if lora.scale is not None else declared[lora.name].scale
    return tuple(sorted(chosen.items()))


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
        mode=params.mode,
        strength=params.strength,
        scheduler=params.scheduler,
        loras=[LoraRequest(name=name, scale=scale) for name, scale in params.loras],
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
        seed=req.seed,
    )
