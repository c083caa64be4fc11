"""POST /v1/images/generations and GET /v1/models: the subset of OpenAI's API that maps onto
ours, so the ``openai`` client (and tools built on it) can talk to the server."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from tinyimg.api.deps import (
    GENERATION_ERRORS,
    ApiKeyDep,
    ConfigDep,
    DurableDep,
    EngineDep,
    JobsDep,
    read_disconnect,
    read_key_hash,
    read_tenancy,
)
from tinyimg.core.errors import InvalidField
from tinyimg.runtime.jobrunner import JobOrder
from tinyimg.runtime.jobviews import build_images_response
from tinyimg.wire.contract import EDGE_ERRORS, OpenAIModelResponse, OpenAIModelsResponse, build_error_responses
from tinyimg.wire.requests import OpenAIImagesRequest, OpenAIImagesResponse, build_generate_request, rename_openai_field

router = APIRouter(tags=["openai"])

# Models have no creation time of their own; OpenAI's list needs one.
_STARTED = int(time.time())


@router.post("/v1/images/generations", response_model=OpenAIImagesResponse, responses=GENERATION_ERRORS)
async def create_images(
    body: OpenAIImagesRequest,
    request: Request,
    config: ConfigDep,
    jobs: JobsDep,
    durable: DurableDep,
    _auth: ApiKeyDep,
) -> OpenAIImagesResponse:
    generate_body = build_generate_request(body, config.models[0].name)
    request.state.model = generate_body.model
    as_url = body.response_format == "url"  # the job then stays for the result TTL, its images by URL
    order = JobOrder(generate_body, body.output_format, str(request.base_url), read_key_hash(request), keep=as_url,
                     **read_tenancy(request))
    try:
        record = await jobs.run(order, lambda: read_disconnect(request))
    except InvalidField as err:
        raise rename_openai_field(err) from None
    return build_images_response(record, as_url, await durable.urls(record.image_keys, record.base_url))


@router.get("/v1/models", response_model=OpenAIModelsResponse, responses=build_error_responses(*EDGE_ERRORS))
def list_openai_models(engine: EngineDep) -> OpenAIModelsResponse:
    return OpenAIModelsResponse(
        data=[OpenAIModelResponse(id=s.name, created=_STARTED, owned_by="tinyimg") for s in engine.model_states()]
    )
