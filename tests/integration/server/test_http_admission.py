"""Admission over real HTTP: a full queue answers 429, loading or failed models 503, each with
Retry-After; the process keeps serving. Model loading is held back by a gate in the handler
factory (the real handler, loaded once the test opens the gate), so "not ready yet" is certain."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server.conftest import start_live, wait_ready
from tests.support.tiny_models import tiny_config
from tinyimg.runtime.engine import build_handler


def model_state_gauge(url: str, model: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "tinyimg_model_state"]
    return {s.labels["state"]: s.value for s in family.samples if s.labels["model"] == model}


async def test_a_full_queue_answers_429_with_retry_after_and_the_rest_complete(tiny_model_dirs, gated):
    """Queue of one, batches of one, the pipeline held by the gate: one request runs, one waits,
    every other is refused at once; opened, the two complete and the server takes more."""
    config = tiny_config(tiny_model_dirs, ("flux",), runtime={"queueSize": 1, "maxBatchSize": 1})
    live = start_live(config, handler_factory=gated)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=120) as client:
            body = {"model": "tiny-flux", "prompt": "crowd", "steps": 2}
            gated.gate.clear()
            gated.entered.clear()
            running = asyncio.create_task(client.post("/generate", json={**body, "seed": 0}))
            await asyncio.to_thread(gated.entered.wait, 30)  # the first holds the device
            waiting = asyncio.create_task(client.post("/generate", json={**body, "seed": 1}))
            await asyncio.to_thread(wait_for_counts, live.url, "tiny-flux", queue_depth=1)
            refused = await asyncio.gather(*(client.post("/generate", json={**body, "seed": i}) for i in range(2, 8)))
            assert [r.status_code for r in refused] == [429] * 6
            for r in refused:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "queue_full"
                assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
            # Admitted before its input is decoded: a full queue refuses even a broken image with
            # 429 (decoding first cost ~640 ms of CPU and ~130 MB for a large one, then 429 anyway).
            broken = await client.post("/generate", json={**body, "image": base64.b64encode(b"not an image").decode()})
            assert (broken.status_code, broken.json()["error"]["code"]) == (429, "queue_full")
            gated.gate.set()
            assert [(await t).status_code for t in (running, waiting)] == [200, 200]
            after = await client.post("/generate", json={**body, "seed": 99})
            assert after.status_code == 200
    finally:
        gated.gate.set()
        live.server.stop()


def test_readiness_is_503_until_the_models_are_loaded_and_warm(tiny_model_dirs):
    gate = threading.Event()

    def gated_handler(spec):
        gate.wait(60)
        return build_handler(spec)

    live = start_live(tiny_config(tiny_model_dirs, ("flux",)), ready=False, handler_factory=gated_handler)
    try:
        assert httpx.get(f"{live.url}/health").json() == {"status": "ok"}
        ready = httpx.get(f"{live.url}/health/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
        assert "loading tiny-flux" in ready.json()["error"]["message"]
        early = httpx.post(f"{live.url}/generate", json={"model": "tiny-flux", "prompt": "too soon"})
        assert early.status_code == 503 and "retry-after" in early.headers
        assert early.json()["error"]["code"] == "model_not_ready"
        early_edit = httpx.post(f"{live.url}/generate", json={"model": "tiny-flux", "prompt": "too soon",
                                                              "image": base64.b64encode(b"not an image").decode()})
        assert (early_edit.status_code, early_edit.json()["error"]["code"]) == (503, "model_not_ready")
        assert model_state_gauge(live.url, "tiny-flux") == {"loading": 1, "ready": 0, "failed": 0}

        gate.set()
        wait_ready(live.url)
        assert httpx.get(f"{live.url}/health/ready").json()["status"] == "ready"
        assert model_state_gauge(live.url, "tiny-flux") == {"loading": 0, "ready": 1, "failed": 0}
        done = httpx.post(f"{live.url}/generate", json={"model": "tiny-flux", "prompt": "now", "steps": 1}, timeout=60)
        assert done.status_code == 200
    finally:
        gate.set()
        live.server.stop()


def test_a_model_that_fails_to_load_is_reported_and_keeps_readiness_503(tiny_model_dirs, tmp_path):
    dirs = {**tiny_model_dirs, "sdxl": tmp_path / "missing"}
    live = start_live(tiny_config(dirs), ready=False)
    try:
        for _ in range(600):
            models = {m["name"]: m for m in httpx.get(f"{live.url}/models").json()["models"]}
            if models["tiny-sdxl"]["state"] == "failed" and models["tiny-flux"]["state"] == "ready":
                break
            threading.Event().wait(0.1)
        assert models["tiny-sdxl"]["state"] == "failed" and models["tiny-sdxl"]["reason"]
        ready = httpx.get(f"{live.url}/health/ready")
        assert ready.status_code == 503 and "tiny-sdxl failed" in ready.json()["error"]["message"]
        refused = httpx.post(f"{live.url}/generate", json={"model": "tiny-sdxl", "prompt": "x"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
        served = httpx.post(f"{live.url}/generate", json={"model": "tiny-flux", "prompt": "x", "steps": 1}, timeout=60)
        assert served.status_code == 200
    finally:
        live.server.stop()


def wait_for_counts(url: str, model: str, timeout: float = 10.0, **expected: int) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        counts = httpx.get(f"{url}/status").json()["models"][model]
        if all(counts[k] == v for k, v in expected.items()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_a_client_that_hangs_up_has_its_queued_request_withdrawn(tiny_model_dirs, gated):
    live = start_live(tiny_config(tiny_model_dirs, ("flux",), runtime={"maxBatchSize": 1}), handler_factory=gated)
    body = {"model": "tiny-flux", "steps": 1}
    try:
        gated.gate.clear()
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(httpx.post, f"{live.url}/generate", json={**body, "prompt": "holder"}, timeout=60)
            assert wait_for_counts(live.url, "tiny-flux", in_flight=1)["in_flight"] == 1
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
                httpx.post(f"{live.url}/generate", json={**body, "prompt": "abandoned"}, timeout=0.5)
            # Withdrawn while the pipeline is still held: it is not waiting for its turn to be wasted.
            assert wait_for_counts(live.url, "tiny-flux", queue_depth=0)["queue_depth"] == 0
            gated.gate.set()
            assert holder.result().status_code == 200
        after = httpx.post(f"{live.url}/generate", json={**body, "prompt": "after"}, timeout=60)
        assert after.status_code == 200
        assert gated.prompts[2:] == [["holder"], ["after"]]  # [:2] are the warm-up's; "abandoned" never ran
        text = httpx.get(f"{live.url}/metrics").text
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "tinyimg_requests"]
        outcomes = {s.labels["outcome"]: s.value for s in family.samples
                    if s.name == "tinyimg_requests_total" and s.labels["model"] == "tiny-flux"}
        assert outcomes == {"ok": 2, "disconnected": 1}
    finally:
        gated.gate.set()
        live.server.stop()
