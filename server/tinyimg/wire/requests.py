"""The wire shapes of the generation requests and answers, shared by the model server and the
router (which checks a body before it forwards it).

Field names are snake_case on the wire, as DESIGN.md lists them for ``/generate``. Type errors are
pydantic's (422 through FastAPI); limits depend on the model's spec, so the model server checks
them once the model is known (``tinyimg.runtime.params``), naming the offending field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tinyimg.core.errors import InvalidField
from tinyimg.spec import ADAPTER_SCALE_RANGE

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


# An adapter URL's length: a presigned URL's query makes a long one.
MAX_ADAPTER_URL_LENGTH = 4096


class LoraRequest(_Wire):
    """One adapter a request uses: by ``name`` (declared in the model's spec, or registered with
    ``POST /v1/adapters``), or by ``url`` with the file's ``sha256`` (hosts on the model's
    ``adapterSources.allowedHosts``)."""

    name: str | None = Field(None, min_length=1, max_length=64, description="An adapter of /models or /v1/adapters.")
    url: str | None = Field(
        None, min_length=1, max_length=MAX_ADAPTER_URL_LENGTH,
        description="A .safetensors LoRA file: https://host/path, hf://org/repo/path[@revision] or s3://bucket/key.",
    )
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="With url: the file's SHA-256 (hex).")
    scale: float | None = Field(
        None, ge=ADAPTER_SCALE_RANGE[0], le=ADAPTER_SCALE_RANGE[1], description="Absent: the adapter's default (1.0 by URL)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> LoraRequest:
        if (self.name is None) == (self.url is None):
            raise ValueError("give either name or url")
        if self.url is not None and self.sha256 is None:
            raise ValueError("url needs sha256 (the file's SHA-256 in hex)")
        if self.url is not None:
            check_unicode(self.url)
        return self


class AdapterRegistration(_Wire):
    """``POST /v1/adapters``: a run-time adapter requests may then name by ``name``."""

    model: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
                      description="What requests' `loras` name it by (not a name the model's spec declares).")
    url: str = Field(min_length=1, max_length=MAX_ADAPTER_URL_LENGTH, description="As a request's `loras[].url`.")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="The file's SHA-256 (hex).")
    scale: float = Field(1.0, ge=ADAPTER_SCALE_RANGE[0], le=ADAPTER_SCALE_RANGE[1], description="When a request gives none.")


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


class JobRequest(GenerateRequest):
    """``/generate``'s body, plus where to POST the finished job (hosts on the allow-list only)
    and whether to stream low-resolution ``preview`` events while it runs."""

    webhook: str | None = Field(None, max_length=2000)
    preview: bool = Field(
        False, description="Stream `preview` events (JPEG data URLs, longest side 128 px) while it runs; "
        "costs a little time per preview, at most one per jobs.previewIntervalMs.",
    )


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


class ContentFlag(_Wire):
    """One image's content check (the model's ``safety.checker``)."""

    flagged: bool
    score: float
    checker: str


class GenerateResponse(_Wire):
    model: str
    images: list[ImageResponse]
    # One per image, in order, when the model checks content (safety.checker); else absent (null).
    content_flags: list[ContentFlag] | None = None
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


# Our field names -> the OpenAI request's, so a 422 names what the client actually sent.
OPENAI_FIELDS = {"width": "size", "height": "size", "num_images": "n"}


def rename_openai_field(err: InvalidField) -> InvalidField:
    """A refusal of an OpenAI-shaped request, naming the OpenAI field the client sent."""
    return InvalidField(OPENAI_FIELDS.get(err.field, err.field), err.reason)


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


# The routes that answer with generated images (both apps): the model server counts them per model.
GENERATION_PATHS = ("/generate", "/v1/images/generations", "/v1/images/edits")


# POST /v1/images/edits (multipart): the form parts one edit may carry (files: image and mask; more
# is a malformed request), and the body's schema for the OpenAPI document.
MAX_FORM_FIELDS, MAX_FORM_FILES = 32, 2

EDIT_REQUEST_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["image", "prompt"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP"},
            "mask": {"type": "string", "format": "binary", "description": "PNG; transparent = repaint"},
            "prompt": {"type": "string"},
            "model": {"type": "string"},
            "n": {"type": "integer", "minimum": 1},
            "size": {"type": "string", "description": '"WIDTHxHEIGHT" or "auto"'},
            "response_format": {"type": "string", "enum": ["b64_json", "url"]},
            "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
            "strength": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "scheduler": {"type": "string"},
        },
    }}},
}
