"""POST /generate: JSON with base64 images, or the raw image when Accept asks for one."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from tinyimg import imaging
from tinyimg.api.auth import ApiKeyDep
from tinyimg.api.deps import ConfigDep, JobsDep
from tinyimg.api.requests import (
    GenerateRequest,
    GenerateResponse,
    ImageResponse,
    OutputFormat,
    TimingsResponse,
    build_generation_params,
    build_parameters_response,
)
from tinyimg.contract import BODY_ERRORS, EDGE_ERRORS, build_error_responses
from tinyimg.errors import ApiError, InvalidField
from tinyimg.logs import request_id_var
from tinyimg.router.auth import hash_key, parse_bearer
from tinyimg.runtime.jobrunner import JobService
from tinyimg.runtime.jobs import ModelNotFound
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.spec import ServerConfig

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


class ClientDisconnected(ApiError):
    """The client hung up before its answer: its job left the queue. 499 is nginx's code for it;
    nobody reads the answer, but the access log and the metrics do."""

    def __init__(self) -> None:
        super().__init__("the client closed the connection; its request was withdrawn", 499, "client_disconnected")


# What a generation route can answer besides 200: the edge's, the body's, auth, the engine's.
GENERATION_ERRORS = build_error_responses(*BODY_ERRORS, 401, 404, 409, 429, 499, 503, 504, *EDGE_ERRORS)


async def read_disconnect(request: Request) -> None:
    """Returns when the client hangs up. The route has read the whole body by now, so servers
    send nothing more until the connection closes (or our response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class JobCancelled(ApiError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled (DELETE /v1/jobs/{job_id})", 409, "job_cancelled")


async def wait_while_connected(request: Request, jobs: JobService, record: JobRecord) -> None:
    """Wait for the job unless the client hangs up first: then the job is cancelled, which
    withdraws it from the queue, or (running) drops it from its batch. Servers do not cancel a
    route when its client goes away, so without this a queue of abandoned requests would still
    be generated."""
    finished = asyncio.ensure_future(record.done.wait())
    hangup = asyncio.ensure_future(read_disconnect(request))
    try:
        done, _ = await asyncio.wait((finished, hangup), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server stops serving this request
        jobs.cancel(record)
        raise
    finally:
        for task in (finished, hangup):
            task.cancel()
    if finished in done:
        return
    hangup.result()  # re-raises if listening for the hang-up itself failed
    jobs.cancel(record)
    raise ClientDisconnected()


async def create_job(
    request: Request, body: GenerateRequest, config: ServerConfig, jobs: JobService, output_format: str,
    *, webhook: str | None = None, keep: bool = True, job_id: str | None = None, preview: bool = False,
) -> JobRecord:
    """Resolve one request (defaults, limits) and queue it as a job; refused now when the model
    is unknown or not ready or its queue is full. Shared by /generate, /v1/jobs and the OpenAI route."""
    request.state.model = body.model
    try:
        spec = config.model(body.model)
    except KeyError:
        raise ModelNotFound(body.model, [m.name for m in config.models]) from None
    if body.image is None:
        params = build_generation_params(body, spec, request_id_var.get())
    else:
        # Admit first, decode after: a request refused for a full queue or a model not ready must
        # not cost the decoding (hundreds of ms and MB for a large input). Decoding and resizing
        # run off the event loop; the job's creation below checks again.
        jobs.engine.check_admits(spec.name)
        params = await run_in_threadpool(build_generation_params, body, spec, request_id_var.get())
    token = parse_bearer(request.headers.get("authorization"))
    key_hash = hash_key(token) if request.app.state.api_keys is not None and token else None
    record = jobs.create(spec.name, params, output_format, webhook=webhook, key_hash=key_hash, keep=keep, job_id=job_id,
                         preview=preview)
    record.base_url = str(request.base_url)
    return record


@dataclass
class Generation:
    record: JobRecord
    total_seconds: float


async def run_generation(
    request: Request, body: GenerateRequest, config: ServerConfig, jobs: JobService, output_format: str,
    *, keep: bool = False,
) -> Generation:
    """A job the caller waits on; shared by /generate and the OpenAI route. ``keep``: its result
    stays in the job store (for image URLs) instead of being forgotten once answered."""
    started = time.perf_counter()
    record = await create_job(request, body, config, jobs, output_format, keep=keep)
    await wait_while_connected(request, jobs, record)
    if record.status == "failed" and record.error is not None:
        raise record.error
    if record.status != "succeeded":
        raise JobCancelled(record.id)
    return Generation(record, time.perf_counter() - started)


def build_generate_response(body: GenerateRequest, g: Generation) -> GenerateResponse:
    r = g.record
    return GenerateResponse(
        model=body.model,
        images=[
            ImageResponse(b64=base64.b64encode(data).decode("ascii"), seed=seed, format=cast(OutputFormat, r.output_format))
            for data, seed in zip(r.images, r.seeds, strict=True)
        ],
        parameters=build_parameters_response(r.params, cast(OutputFormat, r.output_format)),
        timings=TimingsResponse(
            queued_seconds=round(r.queued_seconds or 0.0, 6),
            inference_seconds=round(r.inference_seconds or 0.0, 6),
            total_seconds=round(g.total_seconds, 6),
        ),
        device=r.device or "",
        batch_size=r.batch_size or 0,
        request_id=request_id_var.get(),
    )


def build_raw_response(g: Generation) -> Response:
    r = g.record
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
    config: ConfigDep,
    jobs: JobsDep,
    _auth: ApiKeyDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response | GenerateResponse:
    raw_format = read_raw_format(accept)
    if raw_format and body.num_images != 1:
        request.state.model = body.model
        raise InvalidField(
            "num_images", f"a raw image answer (Accept: image/{raw_format}) carries one image, not {body.num_images}"
        )
    g = await run_generation(request, body, config, jobs, raw_format or body.output_format)
    return build_raw_response(g) if raw_format else build_generate_response(body, g)
