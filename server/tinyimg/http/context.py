"""The outermost middleware of both apps: request id in and out (a contextvar for logs and error
bodies), the header-count bound, the request body's size bound, the access log line, and the
last-resort JSON 500.

Request ids: one rule in both services. A caller's X-Request-ID is kept only when it is short and
plain (it lands in logs and headers); otherwise a fresh one is made. The router sends its id on to
the backend, which keeps it by the same rule, so both log lines carry the same id.

The body bound: refused by Content-Length up front, and counted as it arrives (a chunked upload
has no Content-Length, and a client may lie), so no more than the limit is ever held: 413; and all
bodies held at once stay under the process's budget: 503. (Its pace is bounded by the protocol:
``tinyimg.http.protocol``.) FastAPI's own ``max_body_size`` sits outside the app's middleware, so
its 413 would carry neither the request id nor the error shape. Errors while the body is read are
``HTTPException``s because FastAPI passes those through while it reads a body (others become 400).

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, and the contextvar set
here is the one the route sees.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyimg.core.errors import build_error_response, status_code_name
from tinyimg.core.logs import request_id_var
from tinyimg.http.limits import EdgeLimits

log = logging.getLogger("tinyimg.http")
access_log = logging.getLogger("tinyimg.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_request_id() -> str:
    return uuid.uuid4().hex


def read_request_id(given: str | None) -> str:
    return given if given is not None and _SAFE_ID.fullmatch(given) else new_request_id()


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodiesOverBudget(HTTPException):
    code = "server_busy"

    def __init__(self, budget: int):
        super().__init__(503, f"request bodies held at once would pass this process's bound of {budget} bytes; retry",
                         headers={"Retry-After": "1"})


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
    """``limits``: the header count, the body size per request, and all bodies held at once."""

    def __init__(self, app: ASGIApp, limits: EdgeLimits, observe: Observer | None = None,
                 extra_headers: tuple[tuple[bytes, bytes], ...] = ()):
        """``extra_headers``: on every answer (the model server's revision)."""
        self.app, self.observe, self.extra_headers = app, observe, extra_headers
        self.max_header_count, self.max_body_bytes = limits.max_header_count, limits.max_body_bytes
        self.max_body_total = max(limits.max_body_bytes_total or limits.max_body_bytes, limits.max_body_bytes)
        self.held = 0  # bytes of bodies received by requests not yet answered (one event loop: no lock)

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
                message["headers"] = [*headers, (_ID_HEADER, request_id.encode("latin-1")), *self.extra_headers]
            await send(message)

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if received + size > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
                if self.held + size > self.max_body_total:
                    raise BodiesOverBudget(self.max_body_total)
                received += size
                self.held += size
            return message

        try:
            refusal = self.refuse_early(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, counting_receive, send_with_id)
        except ClientDisconnect:  # gone while we read its body: nobody to answer (nginx's 499)
            status = 499
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            response = build_error_response(500, "internal_error", "internal server error; see the server log")
            await response(scope, receive, send_with_id)
        finally:
            self.held -= received
            duration = time.perf_counter() - started
            self.log_access(scope, status, duration)
            if self.observe is not None:
                self.observe(scope, status, duration)
            request_id_var.reset(token)

    def refuse_early(self, scope: Scope) -> Response | None:
        """The answer for a request refused on its head alone: too many headers, or a declared
        body over the limit (or a Content-Length that is no number)."""
        if len(scope["headers"]) > self.max_header_count:
            return build_error_response(431, "headers_too_large", f"more than {self.max_header_count} request headers")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            exc = BodyTooLarge(self.max_body_bytes) if declared.isdigit() else HTTPException(400, "bad Content-Length")
            return build_error_response(exc.status_code, status_code_name(exc.status_code), exc.detail)
        return None

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
