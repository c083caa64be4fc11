"""Errors the router itself answers with: an ApiError (tinyimg.core.errors), so one handler and one
shape serve both services. The argument order (status first) is the router's historical one."""

from __future__ import annotations

from tinyimg.core.errors import ApiError


class RouterError(ApiError):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(message, status, code, retry_after)
