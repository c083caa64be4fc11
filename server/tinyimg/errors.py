"""The error shape both HTTP services (model server and router) answer with:
{"error": {"code", "message", "request_id"}} (plus extra fields such as "field"), and
Retry-After where waiting helps. Torch-free: the router uses it too."""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

from tinyimg.logs import request_id_var

# Stable codes where Python's phrase changed between versions (413 is "Content Too Large" in 3.13).
_STATUS_CODES = {413: "payload_too_large"}


def build_error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id_var.get(), **extra}}


def build_error_response(
    status: int, code: str, message: str, retry_after: float | None = None, **extra: Any
) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return JSONResponse(build_error_body(code, message, **extra), status_code=status, headers=headers)


def status_code_name(status: int) -> str:
    """A stable snake_case code for an HTTP status: 404 -> "not_found"."""
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"
