"""POST /generate: JSON with base64 images, or the raw image when Accept asks for one."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from tinyimg import imaging
from tinyimg.api.auth import ApiKeyDep
from tinyimg.api.deps import ConfigDep, EngineDep, MetricsDep
from tinyimg.api.metrics import ServerMetrics
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
from tinyimg.runtime.jobs import GenerationParams, GenerationResult, ModelNotFound
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
GENERATION_ERRORS = build_error_responses(*BODY_ERRORS, 401, 404, 429, 499, 503, 504, *EDGE_ERRORS)


async def read_disconnect(request: Request) -> None:
    """Returns when the client hangs up. The route has read the whole body by now, so servers
    send nothing more until the connection closes (or our response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def generate_while_connected(
    request: Request, engine: Any, model: str, params: GenerationParams
) -> GenerationResult:
    """The engine's answer, unless the client hangs up first: then the generation is cancelled,
    which withdraws a queued job (a running batch finishes; this request's images are dropped).
    Servers do not cancel a route when its client goes away, so without this a queue of
    abandoned requests would still be generated."""
    generation = asyncio.ensure_future(engine.generate(model, params))
    hangup = asyncio.ensure_future(read_disconnect(request))
    try:
        done, _ = await asyncio.wait((generation, hangup), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (generation, hangup):
            task.cancel()
    if generation in done:
        return cast(GenerationResult, generation.result())  # engine is Any (duck-typed)
    hangup.result()  # re-raises if listening for the hang-up itself failed
    raise ClientDisconnected()


def encode_all(images: list[Any], output_format: str) -> list[bytes]:
    return [imaging.encode_image(image, output_format) for image in images]


@dataclass
class Generation:
    params: GenerationParams
    result: GenerationResult
    encoded: list[bytes]
    output_format: OutputFormat
    total_seconds: float


async def run_generation(
    request: Request, body: GenerateRequest, config: ServerConfig, engine: Any, metrics: ServerMetrics,
    output_format: OutputFormat,
) -> Generation:
    """Resolve, generate and encode one request; shared by /generate and the OpenAI route."""
    started = time.perf_counter()
    request.state.model = body.model
    try:
        spec = config.model(body.model)
    except KeyError:
        raise ModelNotFound(body.model, [m.name for m in config.models]) from None
    if body.image is None:
        params = build_generation_params(body, spec, request_id_var.get())
    else:  # decoding and resizing the input takes milliseconds: keep it off the event loop
        params = await run_in_threadpool(build_generation_params, body, spec, request_id_var.get())
    result = await generate_while_connected(request, engine, spec.name, params)
    # Encoding a large PNG takes tens of milliseconds: keep it off the event loop.
    encoded = await run_in_threadpool(encode_all, [i.image for i in result.images], output_format)
    metrics.count_images(spec.name, len(encoded))
    return Generation(params, result, encoded, output_format, time.perf_counter() - started)


def build_generate_response(body: GenerateRequest, g: Generation) -> GenerateResponse:
    return GenerateResponse(
        model=body.model,
        images=[
            ImageResponse(b64=base64.b64encode(data).decode("ascii"), seed=image.seed, format=g.output_format)
            for data, image in zip(g.encoded, g.result.images, strict=True)
        ],
        parameters=build_parameters_response(g.params, g.output_format),
        timings=TimingsResponse(
            queued_seconds=round(g.result.queued_seconds, 6),
            inference_seconds=round(g.result.inference_seconds, 6),
            total_seconds=round(g.total_seconds, 6),
        ),
        device=g.result.device,
        batch_size=g.result.batch_size,
        request_id=request_id_var.get(),
    )


def build_raw_response(g: Generation) -> Response:
    return Response(
        g.encoded[0],
        media_type=imaging.media_type(g.output_format),
        headers={
            "X-Seed": str(g.result.images[0].seed),
            "X-Device": g.result.device,
            "X-Inference-Seconds": f"{g.result.inference_seconds:.6f}",
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
    engine: EngineDep,
    metrics: MetricsDep,
    _auth: ApiKeyDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response | GenerateResponse:
    raw_format = read_raw_format(accept)
    if raw_format and body.num_images != 1:
        request.state.model = body.model
        raise InvalidField(
            "num_images", f"a raw image answer (Accept: image/{raw_format}) carries one image, not {body.num_images}"
        )
    g = await run_generation(request, body, config, engine, metrics, raw_format or body.output_format)
    return build_raw_response(g) if raw_format else build_generate_response(body, g)
