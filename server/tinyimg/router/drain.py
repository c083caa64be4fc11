"""The router's end on SIGTERM: open requests get until shortly before the shutdown timeout, then
each still waiting for its answer gets a JSON 503 ``draining`` (retryable on another replica)
instead of uvicorn's plain-text 500 for the tasks it cancels; a relayed stream (an event stream)
is ended, and its client reconnects elsewhere with ``Last-Event-ID``.

``DrainGuard`` is an ASGI middleware that knows each open request's task and whether its answer
has started; ``RouterServer`` is uvicorn's server with the signal hook that starts the countdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyimg.core.errors import build_error_response

log = logging.getLogger("tinyimg.router")
# Time left for the cancelled requests' answers to be written before uvicorn cancels in turn.
ANSWER_SECONDS = 1.0
RETRY_AFTER_SECONDS = 1.0


class DrainGuard:
    """``holder.drain_guard`` is set to the instance (Starlette builds middleware itself)."""

    def __init__(self, app: ASGIApp, holder: Any):
        self.app = app
        self.open: set[asyncio.Task[Any]] = set()
        self.giving_up = False
        holder.drain_guard = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.open.add(task)
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not self.giving_up or started:
                raise  # a started answer cannot change its status: the connection is closed
            task.uncancel()
            response = build_error_response(503, "draining", "the router is shutting down; retry (another replica answers)",
                                            RETRY_AFTER_SECONDS)
            response.headers["connection"] = "close"
            await response(scope, receive, send)
        finally:
            self.open.discard(task)

    def give_up(self) -> None:
        """Answer every request still open: 503 where its answer has not started, else end it."""
        self.giving_up = True
        if self.open:
            log.warning("shutdown timeout: ending %d open requests", len(self.open), extra={"shutdown": "give_up"})
        for task in list(self.open):
            task.cancel()


class RouterServer(uvicorn.Server):
    """uvicorn, where the first SIGTERM also starts the countdown to ``DrainGuard.give_up`` (of
    ``holder.drain_guard``), ``ANSWER_SECONDS`` before uvicorn's own ``timeout_graceful_shutdown``
    would cancel the same requests into plain-text 500s."""

    def __init__(self, config: uvicorn.Config, holder: Any):
        super().__init__(config)
        self._holder = holder
        self._loop: asyncio.AbstractEventLoop | None = None
        self._countdown: asyncio.TimerHandle | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        timeout = self.config.timeout_graceful_shutdown
        if sig == signal.SIGTERM and self._loop is not None and timeout is not None:
            # A signal handler runs between two bytecodes of the loop's thread: go through the loop.
            self._loop.call_soon_threadsafe(self._arm, max(0.0, timeout - ANSWER_SECONDS))

    def _arm(self, delay: float) -> None:
        guard = getattr(self._holder, "drain_guard", None)
        if self._countdown is None and guard is not None:
            self._countdown = asyncio.get_running_loop().call_later(delay, guard.give_up)
