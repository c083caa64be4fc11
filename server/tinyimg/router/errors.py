"""Router errors, in the model server's shape (tinyimg.errors)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from tinyimg.errors import build_error_response


class RouterError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def build_router_error_response(err: RouterError) -> JSONResponse:
    return build_error_response(err.status, err.code, err.message, err.retry_after)
