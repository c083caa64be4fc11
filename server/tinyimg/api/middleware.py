"""Pure ASGI middleware: the request id (X-Request-ID in and out, a contextvar for logs), the access
log line, the last-resort 500, and the request body size limit.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request and the contextvar set here
is the one the route sees.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyimg.errors import build_error_response, status_code_name
from tinyimg.logs import request_id_var

log = logging.getLogger("tinyimg.api")
access_log = logging.getLogger("tinyimg.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is echoed only if it is short and plain (it lands in logs and headers).
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Probe and scrape traffic is logged at debug so it does not drown the generation requests.
_QUIET_PATHS = ("/health", "/metrics")

Observer = Callable[[Scope, int, float], None]


def read_request_id(headers: Headers) -> str:
    given = headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex


class RequestContextMiddleware:
    """Outermost of ours: everything inside it (handlers included) sees the request id."""

    def __init__(self, app: ASGIApp, observe: Observer | None = None):
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = read_request_id(Headers(scope=scope))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            response = build_error_response(500, "internal_error", "internal server error; see the server log")
            await response(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            level = logging.DEBUG if scope["path"].startswith(_QUIET_PATHS) else logging.INFO
            access_log.log(
                level,
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_seconds": round(duration, 6),
                    "model": scope.get("state", {}).get("model"),
                },
            )
            if self.observe is not None:
                self.observe(scope, status, duration)
            request_id_var.reset(token)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: by Content-Length up front, and by counting what arrives
    (a chunked upload has no Content-Length, and a client may lie in it)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

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
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)
