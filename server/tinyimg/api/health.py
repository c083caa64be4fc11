"""Kubernetes probes: GET /health (the process answers) and GET /health/ready (models loaded and warm)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tinyimg.api.deps import EngineDep
from tinyimg.core.errors import build_error_response
from tinyimg.runtime.jobs import EngineApi
from tinyimg.wire.contract import EDGE_ERRORS, HealthResponse, build_error_responses

router = APIRouter(tags=["health"])

# A loading model takes seconds to minutes; probes and clients need not come back sooner.
NOT_READY_RETRY_AFTER = 5.0


@router.get(
    "/health", response_model=HealthResponse, response_model_exclude_none=True,
    responses=build_error_responses(*EDGE_ERRORS),
)
async def read_liveness() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/health/ready", response_model=HealthResponse, responses=build_error_responses(503, *EDGE_ERRORS)
)
async def read_readiness(engine: EngineDep) -> HealthResponse | JSONResponse:
    ready, reason = engine.readiness()
    if not ready:
        return build_error_response(503, read_not_ready_code(engine), reason, NOT_READY_RETRY_AFTER)
    return HealthResponse(status="ready", reason=reason or None)


def read_not_ready_code(engine: EngineApi) -> str:
    """``draining`` once shutdown began (the pod will not come back), else ``not_ready``."""
    return "draining" if engine.is_draining() else "not_ready"
