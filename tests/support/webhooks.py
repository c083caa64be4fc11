"""A webhook receiver on loopback (a real uvicorn serving a Starlette route) that fails a given
number of times before it accepts, and the signature check a Standard Webhooks receiver does."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.jobs_client import WEBHOOK_SECRET
from tinyimg.serve import BackgroundServer


class Receiver:
    def __init__(self, failures: int):
        self.failures = failures
        self.calls: list[tuple[int, dict[str, str], bytes]] = []  # (answered status, headers, body)

    async def receive(self, request: Request) -> Response:
        status = 500 if self.failures > 0 else 204
        self.failures -= 1
        self.calls.append((status, dict(request.headers), await request.body()))
        return Response(status_code=status)

    def wait_for_calls(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.calls) >= count, f"{len(self.calls)} webhook calls after {timeout}s, wanted {count}"


@contextlib.contextmanager
def running_receiver(failures: int = 0) -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver(failures)
    server = BackgroundServer(Starlette(routes=[Route("/hook", hooks.receive, methods=["POST"])])).start()
    try:
        yield hooks, f"{server.url}/hook"
    finally:
        server.stop()


def verify(headers: dict[str, str], body: bytes, secret: bytes = WEBHOOK_SECRET) -> bool:
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(f"v1,{expected}", s) for s in headers["webhook-signature"].split())
