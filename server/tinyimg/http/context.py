"""The outermost middleware of both apps: request id in and out (a contextvar for logs and error
bodies), the header-count bound, the access log line, and the last-resort JSON 500.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, and the contextvar set
here is the one the route sees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyimg.core.errors import build_error_response
from tinyimg.core.logs import request_id_var
from tinyimg.http.request_id import REQUEST_ID_HEADER, read_request_id

log = logging.getLogger("tinyimg.http")
access_log = logging.getLogger("tinyimg.access")

# Probe and scrape traffic is logged at debug so it does not drown the generation requests.
QUIET_PATHS = ("/health", "/metrics")
_ID_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")

Observer = Callable[[Scope, int, float], None]


def find_header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_header_count: int, observe: Observer | None = None):
        self.app, self.max_header_count, self.observe = app, max_header_count, observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = read_request_id(find_header(scope, _ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _ID_HEADER]
                message["headers"] = [*headers, (_ID_HEADER, request_id.encode("latin-1"))]
            await send(message)

        try:
            if len(scope["headers"]) > self.max_header_count:
                response = build_error_response(
                    431, "headers_too_large", f"more than {self.max_header_count} request headers"
                )
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except ClientDisconnect:  # gone while we read its body: nobody to answer (nginx's 499)
            status = 499
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            response = build_error_response(500, "internal_error", "internal server error; see the server log")
            await response(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            self.log_access(scope, status, duration)
            if self.observe is not None:
                self.observe(scope, status, duration)
            request_id_var.reset(token)

    @staticmethod
    def log_access(scope: Scope, status: int, duration: float) -> None:
        level = logging.DEBUG if scope["path"].startswith(QUIET_PATHS) and status < 400 else logging.INFO
        access_log.log(
            level,
            "%s %s %d",
            scope["method"],
            scope["path"],
            status,
            extra={
                "request_id": scope.get("state", {}).get("request_id", ""),
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_seconds": round(duration, 6),
                "client": (scope.get("client") or ("", 0))[0],
                "model": scope.get("state", {}).get("model"),
            },
        )
