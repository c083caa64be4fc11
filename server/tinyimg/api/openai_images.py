"""POST /v1/images/generations and GET /v1/models: the subset of OpenAI's API that maps onto
ours, so the ``openai`` client (and tools built on it) can talk to the server."""

from __future__ import annotations

import base64
import time

from fastapi import APIRouter, Request

from tinyimg.api.auth import ApiKeyDep
from tinyimg.api.deps import ConfigDep, EngineDep, JobsDep
from tinyimg.api.generate import GENERATION_ERRORS, run_generation
from tinyimg.api.jobs import build_image_url
from tinyimg.api.requests import (
    OpenAIImageData,
    OpenAIImagesRequest,
    OpenAIImagesResponse,
    OutputFormat,
    build_generate_request,
)
from tinyimg.contract import EDGE_ERRORS, OpenAIModelResponse, OpenAIModelsResponse, build_error_responses
from tinyimg.errors import InvalidField
from tinyimg.runtime.jobstore import JobRecord

router = APIRouter(tags=["openai"])

# Our field names -> the OpenAI request's, so a 422 names what the client actually sent.
OPENAI_FIELDS = {"width": "size", "height": "size", "num_images": "n"}
# Models have no creation time of their own; OpenAI's list needs one.
_STARTED = int(time.time())


@router.post("/v1/images/generations", response_model=OpenAIImagesResponse, responses=GENERATION_ERRORS)
async def create_images(
    body: OpenAIImagesRequest,
    request: Request,
    config: ConfigDep,
    jobs: JobsDep,
    _auth: ApiKeyDep,
) -> OpenAIImagesResponse:
    generate_body = build_generate_request(body, config.models[0].name)
    as_url = body.response_format == "url"
    try:
        g = await run_generation(request, generate_body, config, jobs, body.output_format, keep=as_url)
    except InvalidField as err:
        raise InvalidField(OPENAI_FIELDS.get(err.field, err.field), err.reason) from None
    return build_images_response(request, g.record, as_url, body.output_format)


def build_images_response(request: Request, record: JobRecord, as_url: bool, output_format: OutputFormat) -> OpenAIImagesResponse:
    """OpenAI's answer: each image as base64, or (``response_format: url``) as the URL of the job's
    image, valid for the jobs' result TTL. Shared by generations and edits."""
    if as_url:
        data = [OpenAIImageData(url=build_image_url(request, record.id, i)) for i in range(len(record.images))]
    else:
        data = [OpenAIImageData(b64_json=base64.b64encode(image).decode("ascii")) for image in record.images]
    return OpenAIImagesResponse(created=int(time.time()), data=data, output_format=output_format)


@router.get("/v1/models", response_model=OpenAIModelsResponse, responses=build_error_responses(*EDGE_ERRORS))
def list_openai_models(engine: EngineDep) -> OpenAIModelsResponse:
    return OpenAIModelsResponse(
        data=[OpenAIModelResponse(id=s.name, created=_STARTED, owned_by="tinyimg") for s in engine.model_states()]
    )
