"""POST /v1/images/edits: OpenAI's image edit (multipart), so ``openai``'s ``images.edit(...)`` works.

Fields: ``image`` (or ``image[]``, one file), optional ``mask``, ``prompt``, ``n``, ``size``
("WIDTHxHEIGHT" or "auto"), ``response_format`` (b64_json), ``model``, ``output_format``; as
extensions, ``strength`` and ``scheduler``. OpenAI's mask convention: a PNG whose fully transparent
pixels are the ones to repaint; without a mask, the image's own transparent pixels are, and an
image with none is edited as a whole (image-to-image). Other OpenAI fields are ignored.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tinyimg.api.deps import (
    GENERATION_ERRORS,
    ApiKeyDep,
    ConfigDep,
    DurableDep,
    JobsDep,
    read_disconnect,
    read_key_hash,
    read_tenancy,
)
from tinyimg.core.errors import InvalidField
from tinyimg.runtime.inputs import open_image, read_mask_from_alpha
from tinyimg.runtime.jobrunner import JobOrder
from tinyimg.runtime.jobviews import build_images_response
from tinyimg.spec import ServerConfig
from tinyimg.wire.requests import (
    EDIT_REQUEST_BODY,
    MAX_FORM_FIELDS,
    MAX_FORM_FILES,
    GenerateRequest,
    OpenAIImagesResponse,
    rename_openai_field,
)

router = APIRouter(tags=["openai"])

_TEXT_FIELDS = ("prompt", "model", "n", "size", "response_format", "output_format", "strength", "scheduler")

async def read_edit_form(request: Request) -> tuple[dict[str, str], bytes, bytes | None]:
    """The text fields, the image's bytes and the mask's. The edge has bounded the body's size."""
    async with request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS) as form:
        images = [v for k, v in form.multi_items() if k in ("image", "image[]")]
        if len(images) != 1 or not isinstance(images[0], UploadFile):
            raise InvalidField("image", f"one image file is required (got {len(images)})")
        mask = form.get("mask")
        if mask is not None and not isinstance(mask, UploadFile):
            raise InvalidField("mask", "must be a file (a PNG with transparency)")
        fields = {k: v for k, v in form.items() if k in _TEXT_FIELDS and isinstance(v, str)}
        return fields, await images[0].read(), (await mask.read() if mask is not None else None)


def build_edit_request(fields: dict[str, str], image: bytes, mask: bytes | None, config: ServerConfig) -> GenerateRequest:
    """The /generate body an edit stands for; OpenAI's alpha mask becomes our white = repaint mask."""
    if "prompt" not in fields:
        raise InvalidField("prompt", "field required")
    model = fields.get("model") or config.models[0].name
    try:
        spec = config.model(model)
    except KeyError:
        spec = config.models[0]  # the job service answers the unknown model with its 404
    limit = spec.limits.max_input_pixels
    repaint = None
    if mask is not None:
        repaint = read_mask_from_alpha(open_image("mask", mask, limit))
        if repaint is None:
            raise InvalidField("mask", "must be a PNG with transparent pixels (transparent = repaint)")
    else:
        repaint = read_mask_from_alpha(open_image("image", image, limit))
    size = fields.get("size")
    width = height = None
    if size and size != "auto":
        try:
            width, height = (int(part) for part in size.lower().split("x"))
        except ValueError:
            raise InvalidField("size", f'{size!r} is not "WIDTHxHEIGHT" or "auto"') from None
    if fields.get("response_format", "b64_json") not in ("b64_json", "url"):
        raise InvalidField("response_format", 'must be "b64_json" or "url"')
    body: dict[str, Any] = {
        "model": model, "prompt": fields["prompt"], "width": width, "height": height,
        "num_images": fields.get("n", "1"), "output_format": fields.get("output_format", "png"),
        "image": base64.b64encode(image).decode("ascii"),
        "mask": encode_png(repaint) if repaint is not None else None,
        "strength": fields.get("strength"), "scheduler": fields.get("scheduler"),
    }
    try:
        return GenerateRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "body"
        raise rename_openai_field(InvalidField(name, first["msg"])) from None


def encode_png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@router.post(
    "/v1/images/edits", response_model=OpenAIImagesResponse, responses=GENERATION_ERRORS,
    openapi_extra={"requestBody": EDIT_REQUEST_BODY},
)
async def edit_images(
    request: Request, config: ConfigDep, jobs: JobsDep, durable: DurableDep, _auth: ApiKeyDep,
) -> OpenAIImagesResponse:
    fields, image, mask = await read_edit_form(request)
    request.state.model = fields.get("model") or config.models[0].name
    # Decoding the mask (or the image's alpha) is pixel work: off the event loop.
    body = await run_in_threadpool(build_edit_request, fields, image, mask, config)
    as_url = fields.get("response_format") == "url"  # the job then stays for the result TTL, its images by URL
    order = JobOrder(body, body.output_format, str(request.base_url), read_key_hash(request), keep=as_url,
                     **read_tenancy(request))
    try:
        record = await jobs.run(order, lambda: read_disconnect(request))
    except InvalidField as err:
        raise rename_openai_field(err) from None
    return build_images_response(record, as_url, await durable.urls(record.image_keys, record.base_url))
