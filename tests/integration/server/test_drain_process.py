"""SIGTERM on a real `tinyimg serve` process with a full queue: readiness turns 503 first, requests
are still taken for the preStop window and refused after it with a JSON 503 ``draining``, every
accepted request gets its image, and the process exits within the drain bound (tinyimg.core.drain)."""

from __future__ import annotations

import json
import math
import signal
import threading
import time

import httpx
import pytest

from tests.support.processes import Proc, spawn, wait_until_ready, write_server_config
from tinyimg.core.drain import build_drain_timing

REQUEST_TIMEOUT = 60.0
TIMING = build_drain_timing([REQUEST_TIMEOUT])
QUEUED = 6
# Each request should take over a second, so that the queue outlasts the preStop window on any
# machine: the steps are scaled from one timed request (see slow_request).
SECONDS_PER_REQUEST = 1.25
MAX_STEPS = 64


@pytest.fixture
def server(tiny_model_dirs, tmp_path) -> Proc:
    config = write_server_config(
        tmp_path / "drain.yaml", tiny_model_dirs, ("flux",), limits={"maxSteps": MAX_STEPS},
        runtime={"maxBatchSize": 1, "queueSize": 16, "requestTimeoutSeconds": REQUEST_TIMEOUT},
    )
    proc = wait_until_ready(spawn("drain", ["serve", "--config", str(config)], tmp_path))
    yield proc
    proc.kill()


def slow_request(url: str) -> dict:
    """A 256x256 request with enough steps to take about SECONDS_PER_REQUEST here."""
    body = {"model": "tiny-flux", "prompt": "a slow harbour", "width": 256, "height": 256, "steps": 8}
    started = time.monotonic()
    assert httpx.post(f"{url}/generate", json=body, timeout=REQUEST_TIMEOUT).status_code == 200
    scale = math.ceil(SECONDS_PER_REQUEST / (time.monotonic() - started))
    return {**body, "steps": min(MAX_STEPS, 8 * scale)}


class Client:
    """Posts ``body`` from threads and keeps each answer (status, JSON or None, headers)."""

    def __init__(self, url: str, body: dict) -> None:
        self.url = url
        self.body = body
        self.answers: dict[str, tuple[int, dict | None, httpx.Headers]] = {}
        self.threads: list[threading.Thread] = []

    def post(self, name: str, seed: int) -> None:
        def run() -> None:
            r = httpx.post(f"{self.url}/generate", json={**self.body, "seed": seed}, timeout=REQUEST_TIMEOUT + 30)
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
            self.answers[name] = (r.status_code, body, r.headers)

        thread = threading.Thread(target=run, name=name)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT + 60)


def wait_for_status(proc: Proc, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{proc.url}/status", timeout=5).json()
        if predicate(status):
            return status
        time.sleep(0.05)
    raise TimeoutError(f"status never matched: {status}")


def queued(status: dict) -> int:
    return status["models"]["tiny-flux"]["queue_depth"]


def test_sigterm_drains_the_queue_and_refuses_new_requests_with_json_503(server):
    client = Client(server.url, slow_request(server.url))
    for i in range(QUEUED):
        client.post(f"queued-{i}", i)
    wait_for_status(server, lambda s: queued(s) >= 3)
    signalled = time.monotonic()
    server.popen.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 5
    while (ready := httpx.get(f"{server.url}/health/ready", timeout=5)).status_code == 200:
        assert time.monotonic() < deadline, "readiness never turned 503"
        time.sleep(0.05)
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "draining" and ready.json()["error"]["message"] == "draining"
    client.post("in-prestop", 100)  # endpoints may still send requests for the preStop window

    time.sleep(max(0.0, signalled + TIMING.prestop_seconds + 0.5 - time.monotonic()))
    refused = httpx.post(f"{server.url}/generate", json={**client.body, "seed": 200}, timeout=30)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "draining"
    assert refused.headers["retry-after"] == "1"
    assert server.popen.poll() is None  # the queue is not done yet

    client.join()
    server.popen.wait(TIMING.grace_seconds)
    exited = time.monotonic() - signalled
    assert sorted(client.answers) == sorted([f"queued-{i}" for i in range(QUEUED)] + ["in-prestop"])
    statuses = {name: status for name, (status, _, _) in client.answers.items()}
    assert set(statuses.values()) == {200}, statuses
    seeds = sorted(body["images"][0]["seed"] for _, body, _ in client.answers.values())
    assert seeds == [*range(QUEUED), 100]
    assert server.popen.returncode == 0
    assert exited < TIMING.grace_seconds
    log = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert any(e["message"] == "drained" for e in log)
    assert not [e for e in log if e["level"] == "error"], [e for e in log if e["level"] == "error"]
    assert "Traceback" not in server.log.read_text()


def test_a_second_sigterm_answers_what_is_left_with_json_503_not_500(server):
    client = Client(server.url, slow_request(server.url))
    for i in range(QUEUED):
        client.post(f"queued-{i}", i)
    wait_for_status(server, lambda s: queued(s) >= 3)
    server.popen.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    signalled = time.monotonic()
    server.popen.send_signal(signal.SIGTERM)  # the impatient second signal: stop now
    client.join()
    server.popen.wait(TIMING.grace_seconds)
    assert time.monotonic() - signalled < 15
    answers = dict(client.answers)
    assert len(answers) == QUEUED
    refused = {name: body for name, (status, body, _) in answers.items() if status != 200}
    assert refused, "some of the queue must have been left"
    for name, (status, body, headers) in answers.items():
        assert status in (200, 503), (name, status, body)
        if status == 503:
            assert body["error"]["code"] == "draining" and headers["retry-after"] == "1"
    assert "Traceback" not in server.log.read_text()
