"""A job's events as a Server-Sent Events stream.

Each event carries its number (``id:``), so a client that reconnects with ``Last-Event-ID`` gets
only what it missed; a comment goes out after ``keepalive`` seconds of silence so proxies keep
the connection open; the stream ends right after the job's one terminal event. A client leaving
the stream only stops the stream, never the job (only DELETE cancels).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from tinyimg.core.jobs import TERMINAL
from tinyimg.runtime.jobstore import JobEvent, JobRecord

# How long EventSource waits before reconnecting after the connection drops.
RETRY_MS = 2000
KEEPALIVE = b": keep-alive\n\n"


# Event numbers are small; anything longer, or not ASCII digits (str.isdigit takes "²" and
# int() refuses 5,000 digits), is not one we sent: replay from the start.
LAST_EVENT_ID = re.compile(r"[0-9]{1,18}")


def parse_last_event_id(value: str | None) -> int:
    """The number a reconnecting client sends in ``Last-Event-ID``; 0 when absent or malformed."""
    return int(value) if value is not None and LAST_EVENT_ID.fullmatch(value) else 0


def format_event(event: JobEvent) -> bytes:
    data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.name}\ndata: {data}\n\n".encode()


async def stream_job_events(record: JobRecord, after: int, keepalive: float) -> AsyncIterator[bytes]:
    listener = record.listen()
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            listener.clear()
            for event in record.events_after(after):
                yield format_event(event)
                after = event.id
                if event.name in TERMINAL:
                    return
            if record.finished:  # the terminal event was before Last-Event-ID: nothing more will come
                return
            try:
                await asyncio.wait_for(listener.wait(), keepalive)
            except TimeoutError:
                yield KEEPALIVE
    finally:
        record.unlisten(listener)
