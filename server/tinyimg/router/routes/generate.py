"""POST /generate, /v1/images/generations and /v1/images/edits: read the model name, forward the body as is."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from tinyimg.core.errors import InvalidField
from tinyimg.core.tenants import build_tenant_headers
from tinyimg.core.tracing import span
from tinyimg.router.headers import build_upstream_headers
from tinyimg.router.relay import rewrite_image_urls
from tinyimg.router.requests import (
    asks_for_urls,
    build_body_document,
    check_body,
    pick_model,
    read_adapter_keys,
    read_client,
    read_model_name,
)
from tinyimg.router.state import AccessDep, StateDep
from tinyimg.router.tenancy import admit_work, read_body_fields, read_request_tenant, settle
from tinyimg.wire.contract import BODY_ERRORS, EDGE_ERRORS, build_error_responses
from tinyimg.wire.requests import (
    EDIT_REQUEST_BODY,
    MAX_FORM_FIELDS,
    MAX_FORM_FILES,
    GenerateRequest,
    OpenAIImagesRequest,
)

# The body is forwarded as sent (the backend validates it), but the document names its shape: the
# model server's own request models, so both documents describe one request.
GENERATION_BODIES: dict[str, type[BaseModel]] = {"/generate": GenerateRequest, "/v1/images/generations": OpenAIImagesRequest}
# The generation routes with a JSON body: the fast path answers them (an edit's multipart body goes the usual way).
JSON_GENERATION_PATHS = tuple(GENERATION_BODIES)
# Besides the backend's own answers (relayed as they are): the router's refusals.
GENERATION_ERRORS = build_error_responses(*BODY_ERRORS, 401, 404, 429, 499, 502, 503, 504, *EDGE_ERRORS)

router = APIRouter(tags=["generate"], dependencies=[AccessDep])


async def forward_generation(request: Request, state: StateDep) -> Any:
    # The size and pace bounds of the edge (tinyimg.http.context) apply while this reads.
    body = await request.body()
    model = read_model_name(body, list(state.table.models))
    shape = GENERATION_BODIES[request.url.path]
    return await forward_body(request, state, body, model, lambda: check_body(shape, body))


async def forward_edit(request: Request, state: StateDep) -> Any:
    """OpenAI's multipart edit: the model is a form field; the body goes on unchanged (the
    form is parsed from the body already read, within the edge's bounds)."""
    body = await request.body()
    async with request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS) as form:
        named = form.get("model")
        missing = [f for f in ("image", "prompt") if not form.get(f)]
        as_url = form.get("response_format") == "url"
        fields = {k: form.get(k) for k in ("n", "size") if isinstance(form.get(k), str)}

    def check_form() -> None:
        if missing:
            raise InvalidField(missing[0], "Field required")
    return await forward_body(request, state, body, pick_model(named, list(state.table.models)), check_form, as_url, fields)


async def forward_body(request: Request, state: StateDep, body: bytes, model: str,
                       validate: Callable[[], None] | None = None, as_url: bool | None = None,
                       fields: Mapping[str, Any] | None = None) -> Any:
    """``as_url``: the answer carries image URLs of the pod, rewritten to the router's (read from a
    JSON body when not given). ``fields``: what the request's work is counted from (tinyimg.router.
    tenancy; the JSON body's when not given)."""
    tenant = read_request_tenant(request)
    charge = None
    request_id = request.scope["state"]["request_id"]
    # The router's own wait: the tenant's budget, then a cold start's hold (a child span when it holds).
    with span("router.admission", {"tinyimg.model": model, "tinyimg.tenant": tenant.name}):
        if tenant.image_steps_per_minute is not None:  # before the waiting room: over-quota work wakes no GPU
            charge = await admit_work(state, tenant, model, fields if fields is not None else read_body_fields(body))
        try:
            await state.waiting_room.admit(model, request.is_disconnected, read_client(request), validate)
        except BaseException:
            await settle(state, charge, 0)
            raise
    try:
        headers = build_upstream_headers(
            [(k, v) for k, v in request.headers.items()], request_id, request.client.host if request.client else None
        )
        if state.tenants.by_hash:
            headers += build_tenant_headers(tenant, state.job_secret)
        assert state.forwarder is not None  # the lifespan builds it before the first request
        upstream = await state.forwarder.forward(model, request.url.path, body, headers, request_id,
                                                 adapters=read_adapter_keys(body))
    except BaseException:
        await settle(state, charge, 0)
        raise
    await settle(state, charge, upstream.status_code)
    if as_url is None:
        as_url = request.url.path == "/v1/images/generations" and asks_for_urls(body)
    if upstream.status_code == 200 and as_url:
        return await rewrite_image_urls(upstream, request, state)
    return upstream


for _path, _body in GENERATION_BODIES.items():
    router.add_api_route(
        _path, forward_generation, methods=["POST"], response_model=None, responses=GENERATION_ERRORS,
        openapi_extra=build_body_document(_body),
    )

router.add_api_route(
    "/v1/images/edits", forward_edit, methods=["POST"], response_model=None, responses=GENERATION_ERRORS,
    openapi_extra={"requestBody": EDIT_REQUEST_BODY},
)
