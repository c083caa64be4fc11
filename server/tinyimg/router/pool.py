"""The forwarder's keep-alive connections to the pods: one list of idle connections per pod,
most recently used first.

httpcore's ``AsyncConnectionPool`` walks every pooled connection at the start and the end of each
request and asks each idle one's socket whether it is readable (one ``select`` per connection per
request): with 32 busy clients that was about a tenth of the router's time. Here a request takes
the most recently used idle connection of its pod, checks that one alone (expired, or closed by
the pod), and gives it back when its response has been read to the end; a new connection is made
only when none is idle. The connections themselves are httpcore's (``AsyncHTTPConnection``: h11,
timeouts, the same errors), so the forwarder sees no difference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpcore

Origin = tuple[bytes, bytes, int]


def origin_of(url: str) -> Origin:
    """A pod URL's (scheme, host, port), as the pool keys its connections."""
    parsed = httpcore.URL(url)
    return parsed.scheme, parsed.host, parsed.port or (443 if parsed.scheme == b"https" else 80)


class ReturningStream:
    """A response body that gives its connection back once it is closed (read or not)."""

    def __init__(self, stream: Any, give_back: Callable[[], Awaitable[None]]):
        self.stream, self.give_back = stream, give_back

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            await self.give_back()


class ForwardPool:
    """``handle_async_request`` / ``aclose``, as httpcore's pool, without the per-request scan."""

    def __init__(self, max_idle_per_pod: int = 200, keepalive_expiry: float = 30.0):
        self.max_idle_per_pod, self.keepalive_expiry = max_idle_per_pod, keepalive_expiry
        self.idle: dict[Origin, list[httpcore.AsyncHTTPConnection]] = {}
        self.busy: set[httpcore.AsyncHTTPConnection] = set()

    async def _take(self, origin: Origin) -> httpcore.AsyncHTTPConnection | None:
        """The most recently used idle connection to ``origin`` that is still good, else None;
        the expired or closed ones met on the way are closed."""
        idle = self.idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.is_closed() and connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        url = request.url
        origin: Origin = (url.scheme, url.host, url.port or (443 if url.scheme == b"https" else 80))
        connection = await self._take(origin)
        if connection is None:
            connection = httpcore.AsyncHTTPConnection(url.origin, keepalive_expiry=self.keepalive_expiry)
        self.busy.add(connection)
        try:
            response = await connection.handle_async_request(request)
        except BaseException:
            self.busy.discard(connection)
            await connection.aclose()
            raise

        async def give_back() -> None:
            self.busy.discard(connection)
            idle = self.idle.setdefault(origin, [])
            # Closed by now when the pod ended it or the body was not read to its end (httpcore
            # then closes the connection); a surplus idle one is closed here.
            if connection.is_closed() or not connection.is_idle():
                return
            if len(idle) < self.max_idle_per_pod:
                idle.append(connection)
            else:
                await connection.aclose()

        response.stream = ReturningStream(response.stream, give_back)
        return response

    async def sweep(self, known: Callable[[Origin], bool]) -> int:
        """Close idle connections that expired or that their pod closed (a socket the pod shut
        stays in CLOSE_WAIT until closed here), and every idle one of a pod ``known`` no longer
        names (it left the table). Run every few seconds; returns how many were closed."""
        closed = 0
        for origin in list(self.idle):
            keep = known(origin)
            kept = []
            for connection in self.idle[origin]:
                if keep and not connection.is_closed() and connection.is_idle() and not connection.has_expired():
                    kept.append(connection)
                else:
                    await connection.aclose()
                    closed += 1
            if kept:
                self.idle[origin] = kept
            else:
                del self.idle[origin]
        return closed

    async def aclose(self) -> None:
        connections = [c for idle in self.idle.values() for c in idle] + list(self.busy)
        self.idle.clear()
        self.busy.clear()
        for connection in connections:
            await connection.aclose()
