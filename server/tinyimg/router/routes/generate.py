"""POST /generate, /v1/images/generations and /v1/images/edits: read the model name, forward the body as is."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from tinyimg.api.edits import EDIT_REQUEST_BODY, MAX_FORM_FIELDS, MAX_FORM_FILES
from tinyimg.api.requests import GenerateRequest, OpenAIImagesRequest
from tinyimg.contract import BODY_ERRORS, EDGE_ERRORS, build_error_responses
from tinyimg.errors import ApiError, InvalidField
from tinyimg.http.handlers import build_field_path
from tinyimg.router.auth import hash_key, parse_bearer
from tinyimg.router.forward import build_upstream_headers
from tinyimg.router.state import AccessDep, StateDep

# The body is forwarded as sent (the backend validates it), but the document names its shape: the
# model server's own request models, so both documents describe one request.
GENERATION_BODIES: dict[str, type[BaseModel]] = {"/generate": GenerateRequest, "/v1/images/generations": OpenAIImagesRequest}
GENERATION_PATHS = tuple(GENERATION_BODIES)
# Besides the backend's own answers (relayed as they are): the router's refusals.
GENERATION_ERRORS = build_error_responses(*BODY_ERRORS, 401, 404, 429, 499, 502, 503, 504, *EDGE_ERRORS)

router = APIRouter(tags=["generate"], dependencies=[AccessDep])


def read_model_name(body: bytes, known: list[str]) -> str:
    """The model a body names. With one known model and no ``model`` field, that model is meant
    (the backend then decides whether the body is valid)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
        raise ApiError("body: not valid JSON (or nested too deeply)", 422, "invalid_request", extra={"field": "body"}) from None
    return pick_model(data.get("model") if isinstance(data, dict) else None, known)


def pick_model(model: Any, known: list[str]) -> str:
    """The named model, or the one known model when none is named."""
    if isinstance(model, str) and model:
        return model
    if len(known) == 1:
        return known[0]
    raise ApiError("model: field required (the router serves several models)", 422, "invalid_request",
                   extra={"field": "model"})


def check_body(shape: type[BaseModel], body: bytes) -> None:
    """The body's shape, as the model server checks it (422 naming the field): a request that
    would only be refused is not held for a model at zero, so it wakes no GPU."""
    try:
        shape.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidField(build_field_path(tuple(first["loc"])), first["msg"]) from None


def read_key_hash(request: Request) -> str:
    """The hash of the request's API key ("" without one): what router job ids are signed for."""
    token = parse_bearer(request.headers.get("authorization"))
    return hash_key(token) if token else ""


def read_client(request: Request) -> str:
    """Whose request it is, for per-client bounds: the API key's hash, else the client address."""
    return read_key_hash(request) or (request.client.host if request.client else "")


async def forward_generation(request: Request, state: StateDep) -> Any:
    # The size and pace bounds of the edge (tinyimg.http.body) apply while this reads.
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

    def check_form() -> None:
        if missing:
            raise InvalidField(missing[0], "Field required")
    return await forward_body(request, state, body, pick_model(named, list(state.table.models)), check_form, as_url)


async def forward_body(request: Request, state: StateDep, body: bytes, model: str,
                       validate: Callable[[], None] | None = None, as_url: bool | None = None) -> Any:
    """``as_url``: the answer carries image URLs of the pod, rewritten to the router's (read from a
    JSON body when not given)."""
    await state.waiting_room.admit(model, request.is_disconnected, read_client(request), validate)
    request_id = request.scope["state"]["request_id"]
    headers = build_upstream_headers(
        [(k, v) for k, v in request.headers.items()], request_id, request.client.host if request.client else None
    )
    assert state.forwarder is not None  # the lifespan builds it before the first request
    upstream = await state.forwarder.forward(model, request.url.path, body, headers, request_id)
    if as_url is None:
        as_url = request.url.path == "/v1/images/generations" and asks_for_urls(body)
    if upstream.status_code == 200 and as_url:
        from tinyimg.router.routes.jobs import rewrite_image_urls  # here: routes.jobs imports this module

        return await rewrite_image_urls(upstream, request, state)
    return upstream


def asks_for_urls(body: bytes) -> bool:
    """An OpenAI request for ``response_format: "url"``: its URLs name the pod and must be the router's."""
    data = json.loads(body)
    return isinstance(data, dict) and data.get("response_format") == "url"


def inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` references replaced by the definitions themselves: a route's
    ``openapi_extra`` cannot add components, and a ``#/$defs/...`` left in an OpenAPI document
    points nowhere (the request models' definitions are not recursive)."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def build_body_document(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"required": True, "content": {"application/json": {"schema": inline_defs(model.model_json_schema())}}}
    return {"requestBody": schema}


for _path, _body in GENERATION_BODIES.items():
    router.add_api_route(
        _path, forward_generation, methods=["POST"], response_model=None, responses=GENERATION_ERRORS,
        openapi_extra=build_body_document(_body),
    )

router.add_api_route(
    "/v1/images/edits", forward_edit, methods=["POST"], response_model=None, responses=GENERATION_ERRORS,
    openapi_extra={"requestBody": EDIT_REQUEST_BODY},
)
