"""``/v1/adapters`` through the router: a registration or a deletion goes to every ready pod of
the model (each keeps its own registry and disk cache), a listing merges what the pods say. With
keys on, changes need an admin tenant's key, as on a model server.

A pod that starts after a registration does not know it: register again (the pods that have it
answer as before), or declare the adapter in the model's spec for it to be everywhere."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tinyimg.core.errors import ApiError
from tinyimg.core.tenants import require_admin
from tinyimg.router.requests import check_body
from tinyimg.router.state import AccessDep, RouterState, StateDep
from tinyimg.router.table import PodState
from tinyimg.router.tenancy import read_request_tenant
from tinyimg.wire.contract import (
    BODY_ERRORS,
    EDGE_ERRORS,
    AdaptersResponse,
    RegisteredAdapterInfo,
    build_error_responses,
)
from tinyimg.wire.requests import AdapterRegistration

router = APIRouter(tags=["adapters"], dependencies=[AccessDep])


def pods_serving(state: RouterState, model: str) -> list[PodState]:
    if model not in state.table.models:
        known = ", ".join(sorted(state.table.models)) or "none"
        raise ApiError(f"unknown model {model!r}; known models: {known}", 404, "model_not_found")
    pods = state.table.ready_pods(model)
    if not pods:
        raise ApiError(f"model {model!r} has no ready backend", 503, "no_ready_backend", retry_after=5.0)
    return pods


async def ask_all(state: RouterState, pods: list[PodState], method: str, path: str, request: Request,
                  body: bytes | None = None) -> list[httpx.Response | str]:
    """Each pod's answer, or why there is none."""
    assert state.client is not None  # the lifespan opens it before the first request
    headers = {k: v for k, v in request.headers.items() if k in ("authorization", "content-type")}
    headers["x-request-id"] = request.scope["state"]["request_id"]

    async def one(pod: PodState) -> httpx.Response | str:
        try:
            return await state.client.request(method, pod.url + path, content=body, headers=headers,  # type: ignore[union-attr]
                                              timeout=state.settings.upstream_timeout)
        except httpx.HTTPError as err:
            return f"{pod.name}: {type(err).__name__}: {err}"

    return list(await asyncio.gather(*(one(p) for p in pods)))


def answer_from(answers: list[httpx.Response | str], success: int) -> JSONResponse:
    """Every pod agreed: the first answer. Else the first refusal as it is (a 422 names its field),
    or a 502 when a pod could not be asked."""
    failed = [a for a in answers if isinstance(a, str)]
    refused = [a for a in answers if not isinstance(a, str) and a.status_code != success]
    if refused:
        return JSONResponse(refused[0].json(), status_code=refused[0].status_code)
    if failed:
        raise ApiError(f"not every pod could be asked: {failed[0]}", 502, "forward_failed")
    first = answers[0]
    assert not isinstance(first, str)
    return JSONResponse(first.json(), status_code=success)


@router.post("/v1/adapters", status_code=201, response_model=RegisteredAdapterInfo,
             responses=build_error_responses(401, 403, 404, 429, 502, 503, *BODY_ERRORS, *EDGE_ERRORS))
async def register_adapter(request: Request, state: StateDep) -> JSONResponse:
    require_admin(read_request_tenant(request), bool(state.tenants.by_hash))
    body = await request.body()
    check_body(AdapterRegistration, body)
    registration = AdapterRegistration.model_validate_json(body)
    pods = pods_serving(state, registration.model)
    return answer_from(await ask_all(state, pods, "POST", "/v1/adapters", request, body), 201)


@router.delete("/v1/adapters/{model}/{name}", response_model=RegisteredAdapterInfo,
               responses=build_error_responses(401, 403, 404, 429, 502, 503, *EDGE_ERRORS))
async def delete_adapter(model: str, name: str, request: Request, state: StateDep) -> JSONResponse:
    """Deleted wherever it is registered: 404 only when no pod had it."""
    require_admin(read_request_tenant(request), bool(state.tenants.by_hash))
    answers = await ask_all(state, pods_serving(state, model), "DELETE", f"/v1/adapters/{model}/{name}", request)
    deleted = [a for a in answers if not isinstance(a, str) and a.status_code == 200]
    if deleted:
        return JSONResponse(deleted[0].json())
    return answer_from(answers, 200)


@router.get("/v1/adapters", response_model=AdaptersResponse,
            responses=build_error_responses(401, 404, 429, 502, 503, *EDGE_ERRORS))
async def list_adapters(request: Request, state: StateDep, model: str | None = Query(None, max_length=100)) -> AdaptersResponse:
    """Per model: the declared adapters as a pod says, the registrations of any pod, and the
    resident ones of every pod (their devices named ``pod/device``)."""
    models = [model] if model is not None else sorted(state.table.models)
    merged: dict[str, dict[str, Any]] = {}
    for name in models:
        pods = pods_serving(state, name)
        answers = await ask_all(state, pods, "GET", f"/v1/adapters?model={name}", request)
        view: dict[str, Any] = {"declared": [], "registered": {}, "resident": {}}
        for pod, answer in zip(pods, answers, strict=True):
            if isinstance(answer, str) or answer.status_code != 200:
                continue
            item = answer.json()["models"].get(name, {})
            view["declared"] = view["declared"] or item.get("declared", [])
            for entry in item.get("registered", []):
                view["registered"].setdefault(entry["name"], entry)
            for entry in item.get("resident", []):
                held = view["resident"].setdefault(entry["sha256"], {**entry, "devices": []})
                held["devices"] += [f"{pod.name}/{d}" for d in entry["devices"]]
        merged[name] = {"declared": view["declared"], "registered": list(view["registered"].values()),
                        "resident": list(view["resident"].values())}
    return AdaptersResponse.model_validate({"models": merged})
