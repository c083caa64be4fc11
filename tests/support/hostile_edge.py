"""Shared helpers of the edge's hostile tests (tests/hostile/test_edge_*.py): a model server and a
router as real processes, raw-socket clients that send what well-behaved libraries refuse to, and
the processes' resident memory.

The server runs the tiny SDXL pipeline with an API key file; the router fronts it with the same
key. Each starts once per test module (a few seconds), on loopback.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from tests.support.processes import Proc, spawn, wait_until_ready
from tests.support.tiny_models import tiny_config

API_KEY = "edge-test-key"


def write_server_config(path: Path, dirs: dict[str, Path], **server: object) -> Path:
    wire = tiny_config(dirs, ("sdxl",)).to_wire()
    path.write_text(yaml.safe_dump({**wire, **server}))
    return path


@contextlib.contextmanager
def edge_processes(
    tmp: Path, dirs: dict[str, Path], router_args: Iterable[str] = (), server_keys: bool = False,
    server_options: dict[str, object] | None = None,
) -> Iterator[tuple[Proc, Proc]]:
    """(server, router): the server ready (its model loaded, so memory measured later is the
    edge's, not the model's), the router in front. The router always requires ``API_KEY``; the
    server only with ``server_keys`` (behind a router it has none: the router keeps the key)."""
    keys = tmp / "keys"
    keys.write_text(API_KEY + "\n")
    options = {**(server_options or {}), **({"apiKeysFile": str(keys)} if server_keys else {})}
    config = write_server_config(tmp / "server.yaml", dirs, **options)
    server = wait_until_ready(spawn("edge-server", ["serve", "--config", str(config)], tmp))
    router = None
    try:
        router = wait_until_ready(
            spawn("edge-router", ["router", "--backend", f"tiny-sdxl={server.url}", "--api-keys-file", str(keys),
                                  "--poll-interval", "0.2", *router_args], tmp),
            timeout=30,
        )
        yield server, router
    finally:
        for proc in (router, server):
            if proc is not None:
                proc.stop()


def read_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def connect(url: str, timeout: float = 5.0) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def parse_answer(raw: bytes) -> RawAnswer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawAnswer(int(lines[0].split()[1]), headers, body)


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything until the peer closes, or until ``timeout`` (then what came so far)."""
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(url: str, data: bytes, timeout: float = 5.0) -> RawAnswer:
    with connect(url) as sock:
        sock.sendall(data)
        return parse_answer(read_all(sock, timeout))


def send_until_answered(url: str, pieces: Iterable[bytes], timeout: float = 20.0) -> tuple[int, RawAnswer | None]:
    """Send ``pieces`` one after another until the server answers (or closes, or time runs out);
    returns the bytes sent and the answer, if one came."""
    sent, deadline = 0, time.monotonic() + timeout
    with connect(url) as sock:
        for piece in pieces:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable or time.monotonic() > deadline:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        raw = read_all(sock, 5.0)
    return sent, parse_answer(raw) if raw else None


def assert_error_shape(answer: RawAnswer, status: int, code: str) -> None:
    assert answer.status == status, answer
    error = answer.json()["error"]
    assert (error["code"], error["request_id"]) == (code, answer.headers["x-request-id"]), error
    assert error["message"]
