"""``/v1/adapters``: LoRA adapters registered at run time. ``POST`` fetches the file (checked
against its SHA-256, from a host on the model's ``adapterSources.allowedHosts``) and lets requests
name it; ``GET`` lists each model's declared, registered and loaded adapters; ``DELETE`` forgets
one and deletes it from the pipelines. With API keys on, changes need an admin key (a tenant with
``admin: true``, or any key of a plain keys file); reading needs a key."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from tinyimg.api.deps import ApiKeyDep, EngineDep, JobsDep, read_tenant
from tinyimg.core.errors import ApiError
from tinyimg.core.tenants import require_admin
from tinyimg.runtime.adapters import AdapterLibrary, Registration, build_adapter_name
from tinyimg.runtime.jobs import EngineApi, ModelNotFound, ModelView
from tinyimg.wire.contract import (
    BODY_ERRORS,
    EDGE_ERRORS,
    AdaptersResponse,
    ModelAdaptersInfo,
    RegisteredAdapterInfo,
    ResidentAdapterInfo,
    build_adapter_info,
    build_error_responses,
)
from tinyimg.wire.requests import AdapterRegistration

router = APIRouter(tags=["adapters"])


class AdapterNotFound(ApiError):
    def __init__(self, model: str, name: str):
        super().__init__(f"model {model!r} has no registered adapter {name!r}", 404, "adapter_not_found")


def library_of(request: Request) -> AdapterLibrary:
    library: AdapterLibrary | None = request.app.state.jobs.adapters
    if library is None:
        raise ApiError("this server fetches no adapters", 404, "not_found")
    return library


def find_model(engine: EngineApi, name: str) -> ModelView:
    states = {s.name: s for s in engine.model_states()}
    if name not in states:
        raise ModelNotFound(name, list(states))
    return states[name]


def build_registered_info(entry: Registration) -> RegisteredAdapterInfo:
    return RegisteredAdapterInfo(name=entry.name, url=entry.url, sha256=entry.sha256, scale=entry.scale,
                                 registered_at=entry.registered_at)


@router.post("/v1/adapters", status_code=201, response_model=RegisteredAdapterInfo,
             responses=build_error_responses(401, 403, 404, *BODY_ERRORS, *EDGE_ERRORS))
async def register_adapter(body: AdapterRegistration, request: Request, engine: EngineDep, _auth: ApiKeyDep) -> RegisteredAdapterInfo:
    require_admin(read_tenant(request), request.app.state.tenants is not None)
    model = find_model(engine, body.model)
    entry = await library_of(request).register(model.spec, body.name, body.url, body.sha256, body.scale)
    return build_registered_info(entry)


@router.get("/v1/adapters", response_model=AdaptersResponse, responses=build_error_responses(401, 404, *EDGE_ERRORS))
def list_adapters(request: Request, engine: EngineDep, jobs: JobsDep, _auth: ApiKeyDep,
                  model: str | None = Query(None, max_length=100)) -> AdaptersResponse:
    states = [find_model(engine, model)] if model is not None else list(engine.model_states())
    loads = engine.status()["models"]
    registered = jobs.adapters.registered if jobs.adapters is not None else {}
    return AdaptersResponse(models={
        state.name: ModelAdaptersInfo(
            declared=[build_adapter_info(a, state.state, state.adapter_failures) for a in state.spec.adapters],
            registered=[build_registered_info(e) for e in registered.get(state.name, {}).values()],
            resident=[ResidentAdapterInfo.model_validate(r) for r in loads[state.name]["resident_adapters"]]
            if state.name in loads else [],
        )
        for state in states
    })


@router.delete("/v1/adapters/{model}/{name}", response_model=RegisteredAdapterInfo,
               responses=build_error_responses(401, 403, 404, *EDGE_ERRORS))
async def delete_adapter(model: str, name: str, request: Request, engine: EngineDep, _auth: ApiKeyDep) -> RegisteredAdapterInfo:
    """Forgotten at once (requests naming it are then 422); deleted from every replica's pipeline
    between batches, unless another registration names the same file (a request by URL loads it
    again)."""
    require_admin(read_tenant(request), request.app.state.tenants is not None)
    find_model(engine, model)
    library = library_of(request)
    entry = library.unregister(model, name)
    if entry is None:
        raise AdapterNotFound(model, name)
    still_used = {e.sha256 for e in library.registered.get(model, {}).values()}
    if entry.sha256 not in still_used:
        await engine.drop_adapters(model, {build_adapter_name(entry.sha256)})
    return build_registered_info(entry)

