"""The one HTTP error of both services (model server and router), and the shape it leaves in:
{"error": {"code", "message", "request_id"}} (plus extra fields such as "field"), with
Retry-After where waiting helps. Torch-free: the router, the engine and the edge all use it."""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

from tinyimg.core.logs import request_id_var

# Stable codes where Python's phrase changed between versions (413 is "Content Too Large" in 3.13).
_STATUS_CODES = {413: "payload_too_large", 431: "headers_too_large"}


class ApiError(Exception):
    """An error with its HTTP answer. Domain errors subclass it (the engine's ``EngineError``, the
    router's ``RouterError``); one handler turns any of them into the JSON error shape."""

    def __init__(
        self,
        message: str,
        status: int = 500,
        code: str = "internal_error",
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message, self.status, self.code, self.retry_after = message, status, code, retry_after
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return self.message

    def to_response(self) -> JSONResponse:
        response = build_error_response(self.status, self.code, self.message, self.retry_after, **self.extra)
        response.headers.update(self.headers)
        return response


class InvalidField(ApiError):
    """One input value is at fault: 422 naming the field; ``reason`` is the message without it."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}", 422, "invalid_request", extra={"field": field})
        self.field, self.reason = field, reason


def build_error_body(code: str, message: str, request_id: str | None = None, **extra: Any) -> dict[str, Any]:
    rid = request_id if request_id is not None else request_id_var.get()
    return {"error": {"code": code, "message": message, "request_id": rid, **extra}}


def build_retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def build_error_response(
    status: int, code: str, message: str, retry_after: float | None = None, **extra: Any
) -> JSONResponse:
    headers = {"Retry-After": build_retry_after(retry_after)} if retry_after is not None else None
    return JSONResponse(build_error_body(code, message, **extra), status_code=status, headers=headers)


def status_code_name(status: int) -> str:
    """A stable snake_case code for an HTTP status: 404 -> "not_found"."""
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"
