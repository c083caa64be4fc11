"""The request body's size bound: refused by Content-Length up front, and counted as it arrives
(a chunked upload has no Content-Length, and a client may lie), so no more than the limit is ever
held: 413. (Its pace is bounded by the protocol: ``tinyimg.http.protocol``.)

FastAPI's own ``max_body_size`` sits outside the app's middleware, so its 413 would carry neither
the request id nor the error shape; this one sits inside ``RequestContextMiddleware``. Errors are
``HTTPException``s because FastAPI passes those through while it reads a body (others become 400).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyimg.core.errors import build_error_response, status_code_name


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodiesOverBudget(HTTPException):
    code = "server_busy"

    def __init__(self, budget: int):
        super().__init__(503, f"request bodies held at once would pass this process's bound of {budget} bytes; retry",
                         headers={"Retry-After": "1"})


class BodyLimitMiddleware:
    """``max_bytes`` per request; ``max_total`` over all requests of the process at once."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_total: int | None = None):
        self.app, self.max_bytes = app, max_bytes
        self.max_total = max(max_total or max_bytes, max_bytes)
        self.held = 0  # bytes of bodies received by requests not yet answered (one event loop: no lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            exc = BodyTooLarge(self.max_bytes) if declared.isdigit() else HTTPException(400, "bad Content-Length")
            response = build_error_response(exc.status_code, status_code_name(exc.status_code), exc.detail)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if received + size > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                if self.held + size > self.max_total:
                    raise BodiesOverBudget(self.max_total)
                received += size
                self.held += size
            return message

        try:
            await self.app(scope, counting_receive, send)
        finally:
            self.held -= received
