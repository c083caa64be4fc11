"""GET /health and GET /health/ready: the router's own liveness, and whether discovery has
listed every model's backends once."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tinyimg.core.errors import build_error_response
from tinyimg.router.aggregate import build_health_view
from tinyimg.router.state import AccessDep, StateDep
from tinyimg.wire.contract import EDGE_ERRORS, HealthResponse, RouterHealthResponse, build_error_responses

router = APIRouter(tags=["health"], dependencies=[AccessDep])


@router.get("/health", response_model=HealthResponse, response_model_exclude_none=True,
            responses=build_error_responses(401, 429, *EDGE_ERRORS))
async def read_liveness() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/health/ready", response_model=RouterHealthResponse, response_model_exclude_none=True,
            responses=build_error_responses(401, 429, 503, *EDGE_ERRORS))
async def read_readiness(state: StateDep) -> RouterHealthResponse | JSONResponse:
    view = build_health_view(state.table, state.discovery.mode)
    if state.durable is not None and state.durable.queue is not None:
        view.queue = "ok" if await state.durable.queue.ping() else "unavailable"
    if not state.table.synced:
        return build_error_response(
            503, "not_ready", "the router has not listed its backends yet", state.settings.retry_after,
            models=view.model_dump()["models"],
        )
    return view
