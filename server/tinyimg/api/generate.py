"""POST /generate: JSON with base64 images, or the raw image when Accept asks for one."""

from __future__ import annotations

import base64
import time
from typing import Annotated, cast

from fastapi import APIRouter, Header, Request, Response

from tinyimg import imaging
from tinyimg.api.deps import GENERATION_ERRORS, ApiKeyDep, JobsDep, read_disconnect, read_key_hash, read_tenancy
from tinyimg.core.errors import InvalidField
from tinyimg.core.logs import request_id_var
from tinyimg.runtime.jobrunner import JobOrder
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.params import build_parameters_response
from tinyimg.wire.requests import (
    ContentFlag,
    GenerateRequest,
    GenerateResponse,
    ImageResponse,
    OutputFormat,
    TimingsResponse,
)

router = APIRouter(tags=["generate"])

RAW_MEDIA_TYPES: dict[str, OutputFormat] = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
_JSON_MEDIA_TYPES = ("application/json", "application/*", "*/*")


def read_raw_format(accept: str | None) -> OutputFormat | None:
    """The image format an Accept header asks for, or None for the JSON answer. The first listed
    type we serve wins (clients list their preference first; q-values are not weighed)."""
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in RAW_MEDIA_TYPES:
            return RAW_MEDIA_TYPES[media]
        if media in _JSON_MEDIA_TYPES:
            return None
    return None


def build_generate_response(r: JobRecord, total_seconds: float, request_id: str) -> GenerateResponse:
    """``POST /generate``'s JSON answer: the images inline, as base64."""
    output_format = cast(OutputFormat, r.output_format)
    return GenerateResponse(
        model=r.model,
        images=[
            ImageResponse(b64=base64.b64encode(data).decode("ascii"), seed=seed, format=output_format)
            for data, seed in zip(r.images, r.seeds, strict=True)
        ],
        content_flags=[ContentFlag.model_validate(flag) for flag in r.content_flags] if r.content_flags else None,
        parameters=build_parameters_response(r.params, output_format),
        timings=TimingsResponse(
            queued_seconds=round(r.queued_seconds or 0.0, 6),
            inference_seconds=round(r.inference_seconds or 0.0, 6),
            total_seconds=round(total_seconds, 6),
        ),
        device=r.device or "",
        batch_size=r.batch_size or 0,
        request_id=request_id,
    )


def build_raw_response(r: JobRecord) -> Response:
    return Response(
        r.images[0],
        media_type=imaging.media_type(r.output_format),
        headers={
            "X-Seed": str(r.seeds[0]),
            "X-Device": r.device or "",
            "X-Inference-Seconds": f"{r.inference_seconds or 0.0:.6f}",
            "X-Job-ID": r.id,
        },
    )


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses={200: {"content": {media: {} for media in RAW_MEDIA_TYPES}}, **GENERATION_ERRORS},
)
async def generate(
    body: GenerateRequest,
    request: Request,
    jobs: JobsDep,
    _auth: ApiKeyDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response | GenerateResponse:
    request.state.model = body.model
    started = time.perf_counter()
    raw_format = read_raw_format(accept)
    if raw_format and body.num_images != 1:
        raise InvalidField(
            "num_images", f"a raw image answer (Accept: image/{raw_format}) carries one image, not {body.num_images}"
        )
    order = JobOrder(body, raw_format or body.output_format, str(request.base_url), read_key_hash(request), keep=False,
                     **read_tenancy(request))
    record = await jobs.run(order, lambda: read_disconnect(request))
    if raw_format:
        return build_raw_response(record)
    return build_generate_response(record, time.perf_counter() - started, request_id_var.get())
