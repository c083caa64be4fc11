"""``tinyimg serve``'s answer to SIGTERM: drain the engine, then let uvicorn close.

uvicorn's own SIGTERM handling closes the listening socket at once and, after
``timeout_graceful_shutdown``, cancels what is still running (queued requests got a plain-text 500).
Here SIGTERM starts the engine's drain instead (see ``Engine.drain``: readiness 503, the preStop
window still accepting, then 503 ``draining`` for new requests while queued work finishes), and
only once the engine is idle or out of time does uvicorn begin its own shutdown, which then only
has finished answers left to send. A second signal skips the rest of the drain (uvicorn's usual
exit; the lifespan's ``engine.stop()`` answers what is left with 503 ``draining``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("tinyimg.api")


class DrainingServer(uvicorn.Server):
    """uvicorn, with ``engine``'s drain on the first SIGTERM. Any other signal (Ctrl+C, a second
    SIGTERM) stops at once, but still through the engine: queued and running requests are answered
    503 ``draining`` before uvicorn waits for their connections (else they would wait out
    ``timeout_graceful_shutdown`` and then be cancelled into plain-text 500s)."""

    def __init__(self, config: uvicorn.Config, engine: Any):
        super().__init__(config)
        self._engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self.should_exit:  # not serving yet, or already closing
            super().handle_exit(sig, frame)
            return
        then = "drain" if sig == signal.SIGTERM and not self._tasks else "stop"
        # A signal handler runs between two bytecodes of the loop's own thread: schedule the work
        # through the loop's wake-up pipe rather than touching the loop from here.
        self._loop.call_soon_threadsafe(self._begin, then)

    def _begin(self, what: str) -> None:
        if what not in self._tasks:
            work = self._engine.drain() if what == "drain" else self._engine.stop(grace=0.0)
            self._tasks[what] = asyncio.get_running_loop().create_task(self._then_exit(what, work), name=what)

    async def _then_exit(self, what: str, work: Awaitable[Any]) -> None:
        log.info("signal: %s before shutdown", what, extra={"shutdown": what})
        try:
            await work
        except Exception:  # a bug here must still end in uvicorn's shutdown, never a hung pod
            log.exception("%s failed", what)
        self.should_exit = True
