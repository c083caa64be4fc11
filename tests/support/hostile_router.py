"""Helpers for the router's hostile tests (tests/hostile/test_router_*.py): raw-socket requests a
polite client library refuses to send, a process's resident memory and open files from /proc, a
steady load that records every answer, and a fake backend that answers 503 ``draining`` (a tiny
real HTTP server on loopback, as a model server in shutdown does)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import uvicorn

from tests.support.processes import free_port


def raw_post(url: str, path: str, body: bytes, extra_headers: bytes, timeout: float = 30.0) -> int:
    """POST with header bytes sent exactly as given (httpx itself refuses e.g. a trailing space);
    returns the status code of the answer."""
    parts = urlsplit(url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode() + extra_headers + b"\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Answer:
    started: float  # monotonic
    seconds: float
    status: int  # 0: the connection to the router itself failed
    code: str | None = None  # error.code of a JSON error answer


@dataclass
class LoadResult:
    answers: list[Answer] = field(default_factory=list)

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for a in self.answers:
            out[a.status] = out.get(a.status, 0) + 1
        return out

    def percentile_ms(self, q: float, ok_only: bool = True) -> float:
        values = sorted(a.seconds for a in self.answers if a.status == 200 or not ok_only)
        return 1000 * values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def run_load(url: str, body: dict, clients: int, seconds: float, timeout: float = 120.0) -> LoadResult:
    """``clients`` closed-loop clients posting ``body`` to /generate for ``seconds``."""
    result = LoadResult()
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=timeout) as client:

        async def loop() -> None:
            while time.monotonic() < deadline:
                start = time.monotonic()
                try:
                    response = await client.post(url + "/generate", json=body)
                except httpx.HTTPError:
                    result.answers.append(Answer(start, time.monotonic() - start, 0))
                    continue
                code = None
                if response.status_code >= 400:
                    with contextlib.suppress(ValueError, AttributeError, TypeError):
                        code = response.json()["error"]["code"]
                result.answers.append(Answer(start, time.monotonic() - start, response.status_code, code))

        await asyncio.gather(*(loop() for _ in range(clients)))
    return result


class DrainingBackend:
    """A loopback HTTP server that looks like a ready model server to the router's poller, and
    answers every /generate with the model server's shutdown answer: 503, ``draining``,
    Retry-After. Counts the generation requests it refused."""

    def __init__(self, model: str, retry_after: int = 1):
        self.model, self.retry_after = model, retry_after
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.refused = 0
        self.server: uvicorn.Server | None = None

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        path = scope["path"]
        status, headers = 200, [(b"content-type", b"application/json")]
        if path == "/status":
            # What a model server answers (tinyimg.wire.contract): the router's poller reads it strictly.
            body = {"uptime_seconds": 1.0, "devices": [],
                    "models": {self.model: {"queue_depth": 0, "in_flight": 0, "served": 0, "failed": 0}}}
        elif path == "/models":
            body = {"models": [{"name": self.model, "family": "flux", "source": None, "state": "ready"}]}
        else:
            self.refused += 1
            status = 503
            headers.append((b"retry-after", str(self.retry_after).encode()))
            body = {"error": {"code": "draining", "message": "the server is shutting down", "request_id": "x"}}
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    @contextlib.contextmanager
    def running(self) -> Iterator[DrainingBackend]:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", interface="asgi3")
        self.server = uvicorn.Server(config)
        thread = threading.Thread(target=self.server.run, daemon=True)
        thread.start()
        while not self.server.started:
            time.sleep(0.01)
        try:
            yield self
        finally:
            self.server.should_exit = True
            thread.join(10)
