"""GET /models and GET /status for every model together, in the contract's shapes; and GET
/v1/models, the same list in OpenAI's format (so OpenAI clients pointed at the router can list
what they may ask for)."""

from __future__ import annotations

import time

from fastapi import APIRouter

from tinyimg.router.aggregate import build_models_view, build_status_view
from tinyimg.router.fetch import read_model_infos, read_pod_documents
from tinyimg.router.state import AccessDep, StateDep
from tinyimg.wire.contract import (
    EDGE_ERRORS,
    OpenAIModelResponse,
    OpenAIModelsResponse,
    RouterModelsResponse,
    RouterSelfStatus,
    RouterStatusResponse,
    StatusResponse,
    build_error_responses,
)
from tinyimg.wire.process import read_process_status

router = APIRouter(tags=["info"], dependencies=[AccessDep])
INFO_ERRORS = build_error_responses(401, 429, *EDGE_ERRORS)
# Models have no creation time of their own; OpenAI's list needs one.
_STARTED = int(time.time())


@router.get("/models", response_model=RouterModelsResponse, responses=INFO_ERRORS)
async def list_models(state: StateDep) -> RouterModelsResponse:
    assert state.client is not None  # the lifespan opens it before the first request
    infos = await read_model_infos(state.client, state.table, state.settings.status_timeout)
    return build_models_view(state.table, infos)


@router.get("/status", response_model=RouterStatusResponse, responses=INFO_ERRORS)
async def read_status(state: StateDep) -> RouterStatusResponse:
    assert state.client is not None  # the lifespan opens it before the first request
    urls = sorted(state.table.pods)
    results = await read_pod_documents(state.client, urls, "/status", StatusResponse, state.settings.status_timeout)
    own = RouterSelfStatus(
        mode=state.discovery.mode,
        uptime_seconds=round(time.monotonic() - state.started, 3),
        in_flight=sum(p.inflight for p in state.table.pods.values()),
        process=read_process_status(),
    )
    return build_status_view(state.table, results, own)


@router.get("/v1/models", response_model=OpenAIModelsResponse, responses=INFO_ERRORS, tags=["openai"])
async def list_openai_models(state: StateDep) -> OpenAIModelsResponse:
    return OpenAIModelsResponse(
        data=[OpenAIModelResponse(id=name, created=_STARTED, owned_by="tinyimg") for name in sorted(state.table.models)]
    )
