"""GET /models and GET /status: what is configured, and how the engine is doing."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request

from tinyimg.api.deps import EngineDep, is_authenticated
from tinyimg.families import family_info
from tinyimg.runtime.jobs import EngineStatus, ModelView
from tinyimg.wire.contract import (
    EDGE_ERRORS,
    AccelerationInfo,
    ConfigStatus,
    DefaultsResponse,
    LimitsResponse,
    ModelInfoResponse,
    ModelsResponse,
    StatusResponse,
    build_adapter_info,
    build_error_responses,
)
from tinyimg.wire.process import read_process_status

router = APIRouter(tags=["info"])


def build_model_info(state: ModelView, show_local_source: bool) -> ModelInfoResponse:
    """A local directory as ``source`` tells about the host: shown only to a caller with a key."""
    spec = state.spec
    family = family_info(spec.family)
    return ModelInfoResponse(
        name=spec.name,
        family=spec.family,
        source=spec.source if show_local_source or not spec.is_local_source() else None,
        state=state.state,
        reason=state.reason or None,
        device=state.device,
        offload=state.offload,
        negative_prompt_supported=family.negative_prompt,
        defaults=DefaultsResponse.model_validate(spec.resolved_defaults().model_dump()),
        limits=LimitsResponse.model_validate(spec.limits.model_dump()),
        request_timeout_seconds=spec.runtime.request_timeout_seconds,
        modes=list(family.modes),
        schedulers=list(family.schedulers),
        adapters=[build_adapter_info(adapter, state.state, state.adapter_failures) for adapter in spec.adapters],
        acceleration=AccelerationInfo.model_validate(state.warmup.acceleration()) if state.warmup else None,
    )


@router.get("/models", response_model=ModelsResponse, responses=build_error_responses(*EDGE_ERRORS))
def list_models(request: Request, engine: EngineDep) -> ModelsResponse:
    show = is_authenticated(request)
    return ModelsResponse(models=[build_model_info(s, show) for s in engine.model_states()])


def build_status(status: EngineStatus, states: Sequence[ModelView]) -> StatusResponse:
    """The engine's status with each model's load state and reason beside its counts, and this
    process's own memory and CPU time."""
    models: dict[str, dict[str, object]] = {name: dict(counts) for name, counts in status["models"].items()}
    for s in states:
        models.setdefault(s.name, {}).update(state=s.state, reason=s.reason or None)
    return StatusResponse.model_validate({"process": read_process_status(), **status, "models": models})


@router.get("/status", response_model=StatusResponse, responses=build_error_responses(*EDGE_ERRORS))
def read_status(request: Request, engine: EngineDep) -> StatusResponse:
    status = build_status(engine.status(), engine.model_states())
    reloader = request.app.state.reloader
    if reloader is not None:
        status.config = ConfigStatus.model_validate(reloader.describe())
    return status
