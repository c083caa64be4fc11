"""uvicorn's h11 protocol with the bounds uvicorn lacks.

- The request head (request line + headers) is at most ``max_header_bytes``: h11 holds no more
  than that of an incomplete head (``max_incomplete_event_size``) and flags the overflow as 431,
  which is answered in the JSON error shape. (uvicorn's default httptools parser has no bound.)
- A head must be complete within ``header_timeout`` seconds of the connection opening or of the
  previous answer. uvicorn has no header timeout, and its keep-alive timer restarts on every byte,
  so a client dripping a byte at a time held a connection forever.
- A request body that stalls for ``body_timeout`` seconds between two pieces is answered 408 and
  the connection closed (the app sees the client gone).
- At most ``max_connections`` open connections per process for clients: one more is answered 503
  (JSON, Retry-After), except the kubelet's probes (``PROBE_PATHS``), which get
  ``PROBE_HEADROOM`` connections of their own beyond the bound: a process full of clients (event
  streams, slow uploads) is still seen alive and is not restarted for it. Past that, a connection
  is refused at once, before it can hold a file descriptor.

Answers written here come before any app runs, so they are built here, in the same shape, with a
fresh request id, and logged to the same access log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tinyimg.core.errors import build_error_body, build_retry_after
from tinyimg.http.context import new_request_id
from tinyimg.http.limits import EdgeLimits

access_log = logging.getLogger("tinyimg.access")
PROBE_PATHS = frozenset({"/health", "/health/ready"})
PROBE_HEADROOM = 16  # connections beyond the bound that only probes may use (within RESERVED_FDS)


def build_raw_error(
    status: int, code: str, message: str, request_id: str, retry_after: float | None = None
) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection, in the JSON error shape."""
    body = json.dumps(build_error_body(code, message, request_id)).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
        ("x-request-id", request_id),
    ]
    if retry_after is not None:
        headers.append(("retry-after", build_retry_after(retry_after)))
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


def measure_head(event: h11.Request) -> int:
    """The bytes of a parsed request head, as sent (give or take whitespace)."""
    line = len(event.method) + len(event.target) + 12  # "M T HTTP/1.1\r\n"
    return line + sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items()) + 2


class RecordingConnection(h11.Connection):
    """h11's connection, bounding the whole head and remembering why it refused the peer's data
    (its status hint: 431 for an oversized head, 400 otherwise); uvicorn's handler does not pass
    the error on. h11's own bound applies only while a head is incomplete: a head that arrives
    whole in one read is measured here."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request) and measure_head(event) > self._max_incomplete_event_size:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        except h11.RemoteProtocolError as err:
            self.last_error = err
            raise
        return event


class ProbesOnly:
    """The app, for a connection over the client bound: probes pass, anything else gets the 503."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        message = f"this process holds its limit of {self.limit} connections; retry shortly"
        body = json.dumps(build_error_body("too_many_connections", message, request_id)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), (b"retry-after", b"1"), (b"x-request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        access_log.info("%s %s %d", scope["method"], scope["path"], 503,
                        extra={"request_id": request_id, "status": 503, "code": "too_many_connections",
                               "path": scope["path"]})


class EdgeH11Protocol(H11Protocol):
    limits = EdgeLimits()
    conn: RecordingConnection

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conn = RecordingConnection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        over = len(self.connections) - self.limits.max_connections
        if over > PROBE_HEADROOM:
            self.refuse(503, "too_many_connections", f"this process holds its limit of "
                        f"{self.limits.max_connections} connections; retry shortly", retry_after=1)
            return
        if over > 0:
            self.app = ProbesOnly(self.app, self.limits.max_connections)
        self.arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_head_timer()
        self.cancel_body_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a complete head arrived: a request runs
            self.cancel_head_timer()
        # Runs on every piece received, so the body timer measures the pause since the last one.
        self.cancel_body_timer()
        if self.reading_body():
            self.body_timer = self.loop.call_later(self.limits.body_timeout, self.on_body_timeout)

    def reading_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete and not cycle.disconnected

    def cancel_body_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def on_body_timeout(self) -> None:
        self.body_timer = None
        if not self.reading_body() or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the app is slow to read, not the client to send
            self.body_timer = self.loop.call_later(self.limits.body_timeout, self.on_body_timeout)
            return
        if not self.cycle.response_started:
            self.refuse(408, "request_timeout", f"the request body stalled for more than {self.limits.body_timeout:g}s")
        else:
            self.transport.close()
        self.cycle.disconnected = True  # the app's next receive() says the client is gone
        self.cycle.message_event.set()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.head_timer is None:
            self.arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        err = self.conn.last_error
        if err is not None and err.error_status_hint == 431:
            self.refuse(431, "headers_too_large", f"request head over {self.limits.max_header_bytes} bytes")
        else:
            self.refuse(400, "bad_request", f"invalid HTTP request: {err or msg}")

    def arm_head_timer(self) -> None:
        self.cancel_head_timer()
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self.on_head_timeout)

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def on_head_timeout(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        pending, _ = self.conn.trailing_data
        if pending:  # part of a head came, too slowly
            self.refuse(408, "request_timeout", f"request head not received within {self.limits.header_timeout:g}s")
        else:  # idle: close quietly, as a keep-alive timeout does
            self.transport.close()

    def refuse(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        request_id = new_request_id()
        self.transport.write(build_raw_error(status, code, message, request_id, retry_after))
        self.transport.close()
        client = self.client[0] if self.client else ""
        access_log.info(
            "- - %d", status,
            extra={"request_id": request_id, "status": status, "code": code, "client": client, "path": None},
        )


def build_protocol_class(limits: EdgeLimits) -> type[EdgeH11Protocol]:
    return type("EdgeH11Protocol", (EdgeH11Protocol,), {"limits": limits})
