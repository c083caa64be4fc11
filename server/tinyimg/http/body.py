"""The request body's bounds: its size (refused by Content-Length up front, and counted as it
arrives, since a chunked upload has no Content-Length and a client may lie, so no more than the
limit is ever held: 413) and its pace (a body that stalls between two pieces longer than the
timeout: 408).

FastAPI's own ``max_body_size`` sits outside the app's middleware, so its 413 would carry neither
the request id nor the error shape; this one sits inside ``RequestContextMiddleware``. Errors are
``HTTPException``s because FastAPI passes those through while it reads a body (others become 400).
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyimg.errors import build_error_response, status_code_name


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyStalled(HTTPException):
    def __init__(self, seconds: float):
        super().__init__(408, f"the request body stalled for more than {seconds:g}s")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

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
        more = True

        async def counting_receive() -> Message:
            nonlocal received, more
            if not more:  # the body is complete: what follows is a disconnect, however late
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise BodyStalled(self.timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            else:
                more = False
            return message

        await self.app(scope, counting_receive, send)
