"""Webhooks of finished jobs, delivered over real HTTP to a receiver on loopback that fails
twice before it accepts; signatures checked as a Standard Webhooks receiver would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.jobs_client import WEBHOOK_SECRET, create, wait_for
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


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver(failures=2)
    server = BackgroundServer(Starlette(routes=[Route("/hook", hooks.receive, methods=["POST"])])).start()
    yield hooks, f"{server.url}/hook"
    server.stop()


def verify(headers: dict[str, str], body: bytes) -> bool:
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(WEBHOOK_SECRET, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(f"v1,{expected}", s) for s in headers["webhook-signature"].split())


def webhook_count(url: str, outcome: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "tinyimg_webhook_deliveries_total" and sample.labels["outcome"] == outcome:
                return sample.value
    return 0.0


def test_a_webhook_is_retried_until_the_receiver_accepts_and_is_signed(jobs_live, receiver):
    hooks, hook_url = receiver
    delivered_before = webhook_count(jobs_live, "delivered")
    job = create(jobs_live, steps=2, seed=9, webhook=hook_url).json()
    assert job["webhook"] == hook_url
    wait_for(jobs_live, job["id"], lambda j: j["status"] == "succeeded")
    deadline = time.monotonic() + 30
    while len(hooks.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more must come after the accepted one
    assert [status for status, _, _ in hooks.calls] == [500, 500, 204]
    ids = {headers["webhook-id"] for _, headers, _ in hooks.calls}
    assert ids == {f"msg_{job['id']}"}  # one id over retries: receivers drop duplicates by it
    for _, headers, body in hooks.calls:
        assert verify(headers, body)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    payload = json.loads(hooks.calls[-1][2])
    assert payload["id"] == job["id"] and payload["status"] == "succeeded"
    assert payload["images"][0]["seed"] == 9 and payload["images"][0]["url"].startswith(jobs_live)
    assert not verify(hooks.calls[-1][1], hooks.calls[-1][2] + b" ")  # the body is what is signed
    assert webhook_count(jobs_live, "delivered") == delivered_before + 1


@pytest.mark.parametrize(
    "webhook, why",
    [
        pytest.param("http://127.0.0.2:9/hook", "allow-list", id="off-list-loopback"),
        pytest.param("http://169.254.169.254/latest/meta-data", "link-local or metadata", id="metadata"),
        pytest.param("file:///etc/passwd", "http:// or https://", id="not-http"),
        pytest.param("gopher://127.0.0.1/", "http:// or https://", id="gopher"),
    ],
)
def test_webhooks_off_the_allow_list_or_to_metadata_are_refused_at_creation(jobs_live, receiver, webhook, why):
    hooks, _ = receiver
    r = create(jobs_live, steps=2, webhook=webhook)
    assert r.status_code == 422 and r.json()["error"]["field"] == "webhook" and why in r.json()["error"]["message"]
    time.sleep(0.2)
    assert hooks.calls == []
