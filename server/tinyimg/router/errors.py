"""Router errors, in the model server's shape: {"error": {"code", "message", "request_id"}}.

The router keeps its own small copy of the builder rather than importing tinyimg.api, which would
pull the engine contract and (through it) the model server's dependencies into the router.
"""

from __future__ import annotations

import math

from fastapi.responses import JSONResponse

from tinyimg.logs import request_id_var


class RouterError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def build_error_response(status: int, code: str, message: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    body = {"error": {"code": code, "message": message, "request_id": request_id_var.get()}}
    return JSONResponse(body, status_code=status, headers=headers)


def build_router_error_response(err: RouterError) -> JSONResponse:
    return build_error_response(err.status, err.code, err.message, err.retry_after)
