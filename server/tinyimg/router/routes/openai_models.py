"""GET /v1/models through the router: every model it knows, in OpenAI's list format, so OpenAI
clients pointed at the router can list what they may ask for."""

from __future__ import annotations

import time

from fastapi import APIRouter

from tinyimg.router.state import AccessDep, StateDep
from tinyimg.wire.contract import EDGE_ERRORS, OpenAIModelResponse, OpenAIModelsResponse, build_error_responses

router = APIRouter(tags=["openai"], dependencies=[AccessDep])
# Models have no creation time of their own; OpenAI's list needs one.
_STARTED = int(time.time())


@router.get("/v1/models", response_model=OpenAIModelsResponse, responses=build_error_responses(401, 429, *EDGE_ERRORS))
async def list_openai_models(state: StateDep) -> OpenAIModelsResponse:
    return OpenAIModelsResponse(
        data=[OpenAIModelResponse(id=name, created=_STARTED, owned_by="tinyimg") for name in sorted(state.table.models)]
    )
