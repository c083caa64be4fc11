"""POST /v1/images/generations: the subset of OpenAI's images API that maps onto /generate, so
the ``openai`` client (and tools built on it) can talk to the server."""

from __future__ import annotations

import base64
import time

from fastapi import APIRouter, Request

from tinyimg.api.auth import ApiKeyDep
from tinyimg.api.deps import ConfigDep, EngineDep, MetricsDep
from tinyimg.api.generate import GENERATION_ERRORS, run_generation
from tinyimg.api.requests import (
    OpenAIImageData,
    OpenAIImagesRequest,
    OpenAIImagesResponse,
    build_generate_request,
)
from tinyimg.errors import InvalidField

router = APIRouter(tags=["openai"])

# Our field names -> the OpenAI request's, so a 422 names what the client actually sent.
OPENAI_FIELDS = {"width": "size", "height": "size", "num_images": "n"}


@router.post("/v1/images/generations", response_model=OpenAIImagesResponse, responses=GENERATION_ERRORS)
async def create_images(
    body: OpenAIImagesRequest,
    request: Request,
    config: ConfigDep,
    engine: EngineDep,
    metrics: MetricsDep,
    _auth: ApiKeyDep,
) -> OpenAIImagesResponse:
    generate_body = build_generate_request(body, config.models[0].name)
    try:
        g = await run_generation(request, generate_body, config, engine, metrics, body.output_format)
    except InvalidField as err:
        raise InvalidField(OPENAI_FIELDS.get(err.field, err.field), err.reason) from None
    return OpenAIImagesResponse(
        created=int(time.time()),
        data=[OpenAIImageData(b64_json=base64.b64encode(data).decode("ascii")) for data in g.encoded],
        output_format=body.output_format,
    )
