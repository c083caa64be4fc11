"""What the router reads from a request before it forwards it: the model a body names, the body's
shape checked as the model server checks it, whose request it is; and the request bodies the
router's OpenAPI document shows (the model server's own request models)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from tinyimg.core.auth import hash_bearer
from tinyimg.core.errors import ApiError, InvalidField
from tinyimg.http.handlers import build_field_path


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
    return hash_bearer(request.headers.get("authorization")) or ""


def read_client(request: Request) -> str:
    """Whose request it is, for per-client bounds: the API key's hash, else the client address."""
    return read_key_hash(request) or (request.client.host if request.client else "")


def asks_for_urls(body: bytes) -> bool:
    """An OpenAI request for ``response_format: "url"``: its URLs name the pod and must be the router's."""
    data = json.loads(body)
    return isinstance(data, dict) and data.get("response_format") == "url"


def read_adapter_keys(body: bytes) -> frozenset[str]:
    """The adapters a JSON body names, as pods report those they hold: a URL's SHA-256, else the
    name (read only when the body mentions ``loras``: most do not)."""
    if b'"loras"' not in body:
        return frozenset()
    try:
        loras = json.loads(body).get("loras")
    except (ValueError, RecursionError, AttributeError):
        return frozenset()
    keys = set()
    for lora in loras if isinstance(loras, list) else []:
        if isinstance(lora, dict) and isinstance(lora.get("url"), str) and isinstance(lora.get("sha256"), str):
            keys.add(lora["sha256"].lower())
        elif isinstance(lora, dict) and isinstance(lora.get("name"), str):
            keys.add(lora["name"])
    return frozenset(keys)


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
