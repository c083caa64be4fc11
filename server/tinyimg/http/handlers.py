"""Exception handlers of both apps: every error leaves as the JSON error shape with the request id
(tinyimg.core.errors), with Retry-After where waiting helps."""

from __future__ import annotations

import logging
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ExceptionHandler

from tinyimg.core.errors import ApiError, build_error_response, status_code_name

log = logging.getLogger("tinyimg.http")


def build_field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's ("body", "width") -> "width"; nested items keep their path ("a.0.b")."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


async def answer_api_error(request: Request, exc: ApiError) -> JSONResponse:
    # 503 (loading, shutting down) is routine; other 5xx are worth a warning.
    if exc.status >= 500 and exc.status != 503:
        log.warning("request failed: %s", exc.message, extra={"code": exc.code, "status": exc.status})
    return exc.to_response()


async def answer_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = build_field_path(tuple(first["loc"]))
    if isinstance(exc.body, dict) and isinstance(exc.body.get("model"), str):
        request.state.model = exc.body["model"]
    return build_error_response(
        422,
        "invalid_request",
        f"{field}: {first['msg']}",
        field=field,
        errors=[{"field": build_field_path(tuple(e["loc"])), "message": e["msg"]} for e in errors],
    )


async def answer_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = getattr(exc, "code", None) or status_code_name(exc.status_code)
    response = build_error_response(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types every handler as taking any Exception; each of these is registered for the
    # one type it takes, which is all Starlette passes it.
    app.add_exception_handler(ApiError, cast(ExceptionHandler, answer_api_error))
    app.add_exception_handler(RequestValidationError, cast(ExceptionHandler, answer_validation_error))
    app.add_exception_handler(HTTPException, cast(ExceptionHandler, answer_http_error))
