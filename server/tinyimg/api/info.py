"""GET /models and GET /status: what is configured, and how the engine is doing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tinyimg.api.deps import EngineDep
from tinyimg.api.requests import ModelInfoResponse, ModelsResponse
from tinyimg.families import family_info

router = APIRouter(tags=["info"])


def build_model_info(state: Any) -> ModelInfoResponse:
    spec = state.spec
    return ModelInfoResponse(
        name=spec.name,
        family=spec.family,
        source=spec.source,
        state=state.state,
        reason=state.reason or None,
        device=state.device,
        offload=state.offload,
        negative_prompt_supported=family_info(spec.family).negative_prompt,
        defaults=spec.resolved_defaults(),
        limits=spec.limits,
    )


@router.get("/models", response_model=ModelsResponse, response_model_by_alias=False)
def list_models(engine: EngineDep) -> ModelsResponse:
    return ModelsResponse(models=[build_model_info(s) for s in engine.model_states()])


def build_status(status: dict[str, Any], states: list[Any]) -> dict[str, Any]:
    """The engine's status with each model's load state and reason beside its counts."""
    models = {name: dict(counts) for name, counts in status.get("models", {}).items()}
    for s in states:
        models.setdefault(s.name, {}).update(state=s.state, reason=s.reason or None)
    return {**status, "models": models}


@router.get("/status")
def read_status(engine: EngineDep) -> dict[str, Any]:
    return build_status(engine.status(), engine.model_states())
