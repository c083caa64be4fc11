"""Bounds on long-lived event streams (``/v1/jobs/{id}/events``), shared by the model server and
the router: per job, per client (its API key, or its address without keys) and in all. A stream
holds a connection for as long as its job runs, so without these a client could open streams
until the process's connection bound is full and everyone, probes included, is refused.

Pure bookkeeping on one event loop (no lock): ``admit`` counts a stream in or refuses it (429
``too_many_streams`` naming the bound, with Retry-After); the returned ticket's ``release`` counts
it out, once, however the stream ends.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from tinyimg.core.errors import ApiError

RETRY_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class StreamLimits:
    per_job: int = 16
    per_client: int = 64
    total: int = 256


@dataclass
class StreamTicket:
    gate: StreamGate
    job: str
    client: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.leave(self)


@dataclass
class StreamGate:
    limits: StreamLimits = field(default_factory=StreamLimits)
    by_job: Counter[str] = field(default_factory=Counter)
    by_client: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def admit(self, job: str, client: str) -> StreamTicket:
        for count, bound, what in ((self.by_job[job], self.limits.per_job, "for this job"),
                                   (self.by_client[client], self.limits.per_client, "for this client"),
                                   (self.total, self.limits.total, "in this process")):
            if count >= bound:
                raise ApiError(f"{bound} event streams are open {what}; close one or poll the job instead",
                               429, "too_many_streams", retry_after=RETRY_AFTER_SECONDS)
        self.by_job[job] += 1
        self.by_client[client] += 1
        self.total += 1
        return StreamTicket(self, job, client)

    def leave(self, ticket: StreamTicket) -> None:
        for counter, key in ((self.by_job, ticket.job), (self.by_client, ticket.client)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        self.total -= 1


class TicketedStreamingResponse(StreamingResponse):
    """A stream that gives its place back (``tinyimg.http.streams``) however it ends, even when
    the client left before the first byte and the body was never iterated."""

    def __init__(self, ticket: StreamTicket, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.release()
