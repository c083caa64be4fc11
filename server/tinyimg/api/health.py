"""Kubernetes probes: GET /health (the process answers) and GET /health/ready (models loaded and warm)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tinyimg.api.deps import EngineDep
from tinyimg.api.requests import HealthResponse
from tinyimg.errors import build_error_response

router = APIRouter(tags=["health"])

# A loading model takes seconds to minutes; probes and clients need not come back sooner.
NOT_READY_RETRY_AFTER = 5.0


@router.get("/health", response_model=HealthResponse, response_model_exclude_none=True)
async def read_liveness() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/health/ready", response_model=HealthResponse, responses={503: {"description": "Not ready"}})
async def read_readiness(engine: EngineDep) -> HealthResponse | JSONResponse:
    ready, reason = engine.readiness()
    if not ready:
        return build_error_response(503, "not_ready", reason, NOT_READY_RETRY_AFTER)
    return HealthResponse(status="ready", reason=reason or None)
