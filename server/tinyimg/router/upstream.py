"""Relaying a pod's answer to the client: its bytes passed on unchanged (no re-encoding), the
headers a proxy must not pass dropped, and ``on_done(completed)`` called exactly once however the
relay ends (the client gone included): the forwarder releases its lease on the pod there."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import cast

import anyio
import httpcore
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tinyimg.router.headers import NOT_RETURNED_RESPONSE, read_connection_names


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase), decoded."""
    return next((v.decode("latin-1") for k, v in headers if k.lower() == name), None)


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body length (h11 has checked it is one valid number), else None."""
    value = header_value(headers, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


def build_response_headers(raw: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    dropped = NOT_RETURNED_RESPONSE | read_connection_names(raw)
    out = [(k.lower(), v) for k, v in raw if k.lower().decode("latin-1") not in dropped]
    out = [(k, v) for k, v in out if k != b"x-request-id"]
    out.append((b"x-request-id", request_id.encode("latin-1")))
    return out


class UpstreamResponse(Response):
    """A response that relays an upstream response's bytes unchanged (no re-encoding), and calls
    ``on_done(completed)`` exactly once, however the relay ends (client gone included). ``body``:
    the upstream body when it was already read (a 503 whose code was looked at)."""

    origin = ""  # the pod that answered, as the table names it (set by the forwarder)

    def __init__(
        self, upstream: httpcore.Response, request_id: str, on_done: Callable[[bool], None], body: bytes | None = None
    ):
        self.upstream, self.on_done, self.read_body = upstream, on_done, body
        self.status_code = upstream.status
        self.background = None
        self.raw_headers = build_response_headers(upstream.headers, request_id)

    def also_on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` too when the relay ends, however it ends."""
        first = self.on_done

        def both(completed: bool) -> None:
            try:
                first(completed)
            finally:
                callback()
        self.on_done = both

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completed = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self.read_body is not None:
                await send({"type": "http.response.body", "body": self.read_body, "more_body": False})
            elif content_length(self.upstream.headers) is None:
                # A stream (an event stream lasts as long as its job): uvicorn drops what is sent
                # after the client left without saying so, so watch for the leaving and stop
                # reading the pod at once, rather than holding its stream to the job's end.
                relayed, failure = False, None
                async with anyio.create_task_group() as group:
                    async def relay_then_stop() -> None:
                        nonlocal relayed, failure
                        try:
                            await self._relay(send)
                            relayed = True
                        except Exception as err:  # raised below as itself, not as an ExceptionGroup
                            failure = err
                        group.cancel_scope.cancel()
                    group.start_soon(relay_then_stop)
                    await _wait_for_disconnect(receive)
                    group.cancel_scope.cancel()
                if failure is not None:
                    raise failure
                completed = relayed
            else:
                await self._relay(send)
                completed = True
        finally:
            await self.upstream.aclose()
            self.on_done(completed)

    async def _relay(self, send: Send) -> None:
        # With a Content-Length, the chunk that completes it is the last: one message less
        # through the middleware stack per response. Without one (chunked, a stream), each
        # chunk is passed on as it comes and an empty message ends the body.
        left, ended = content_length(self.upstream.headers), False
        async for chunk in cast("AsyncIterable[bytes]", self.upstream.stream):  # an async pool's stream
            if left is not None:
                left -= len(chunk)
            ended = left == 0
            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if not ended:  # no length, or an empty body
            await send({"type": "http.response.body", "body": b"", "more_body": False})


    async def read_all(self) -> bytes:
        """The whole body, for a route that rewrites it instead of relaying it (a job's JSON)."""
        completed = False
        try:
            stream = cast(AsyncIterable[bytes], self.upstream.stream)  # the async pool's stream
            body = self.read_body if self.read_body is not None else b"".join([c async for c in stream])
            completed = True
            return body
        finally:
            await self.upstream.aclose()
            self.on_done(completed)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_bounded(upstream: httpcore.Response, limit: int) -> bytes:
    """The raw upstream body, at most ``limit`` bytes (more is cut: only its error code matters)."""
    chunks, size = [], 0
    async for chunk in cast("AsyncIterable[bytes]", upstream.stream):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]
