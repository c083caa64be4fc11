"""A tenant's flood does not starve another (real uvicorn, the real tiny Flux pipeline with each
denoising step paced to 50 ms, batches of one): tenant B's single requests take about as long
while tenant A has 60 jobs queued as on an idle server, because the fair queue starts B's request
next rather than after A's backlog. A's jobs are smaller than B's requests (2 steps to 4), so a
batch of A's that B arrives behind is shorter than B's own: today's arrival order would make B
wait for all 60 of them (about 8 s)."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
import yaml

from tests.integration.server.conftest import start_live
from tests.support.faults import PacedFluxHandler
from tests.support.tiny_models import tiny_config
from tinyimg.spec import JobsConfig

TENANTS = {"tenants": [
    {"name": "flooder", "priority": "batch", "keys": ["key-a"], "maxQueued": 60},
    {"name": "webapp", "priority": "batch", "keys": ["key-b"]},
]}
A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
SINGLE = {"model": "tiny-flux", "prompt": "a lighthouse", "steps": 4}
FLOOD_JOB = {"model": "tiny-flux", "prompt": "a product shot", "steps": 2}
SAMPLES = 8


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def timed(client: httpx.Client, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    answer = client.post("/generate", json=SINGLE, headers=headers)
    assert answer.status_code == 200, answer.text
    return time.perf_counter() - start


def test_a_flood_of_60_jobs_does_not_slow_another_tenants_requests_past_twice_idle(tiny_model_dirs, tmp_path):
    keys = tmp_path / "tenants.yaml"
    keys.write_text(yaml.safe_dump(TENANTS))
    config = tiny_config(tiny_model_dirs, ("flux",), runtime={"maxBatchSize": 1, "queueSize": 200})
    config.api_keys_file = str(keys)
    live = start_live(config, handler_factory=PacedFluxHandler)
    try:
        with httpx.Client(base_url=live.url, timeout=120) as client:
            timed(client, B)  # warm
            idle = [timed(client, B) for _ in range(SAMPLES)]

            # 70 sent at once: 60 may wait (A's maxQueued), a few more as the first ones start.
            sent = [client.post("/v1/jobs", json={**FLOOD_JOB, "seed": i}, headers=A) for i in range(70)]
            refused = [r for r in sent if r.status_code != 202]
            assert len(sent) - len(refused) >= 60 and refused, [r.status_code for r in sent]
            for over in refused:
                assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
                assert over.json()["error"]["tenant"] == "flooder" and "retry-after" in over.headers

            flooded = [timed(client, B) for _ in range(SAMPLES)]
            status = client.get("/status").json()["tenants"]
            assert status["flooder"]["queued"] >= 20, status  # B was measured while A's backlog waited
            assert status["flooder"]["rejected"] == {"max_queued": len(refused)}

            usage = client.get("/v1/usage", headers=A).json()
            assert (usage["tenant"], usage["priority"], usage["max_queued"]) == ("flooder", "batch", 60)
            assert 0 < usage["queued"] <= status["flooder"]["queued"]  # the backlog drains meanwhile
            metrics = client.get("/metrics").text
            assert f'tinyimg_tenant_rejected_total{{reason="max_queued",tenant="flooder"}} {len(refused)}.0' in metrics
            assert 'tinyimg_tenant_queued{tenant="flooder"}' in metrics
            (served_b,) = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                           if line.startswith('tinyimg_tenant_image_steps_total{tenant="webapp"}')]
            assert served_b == pytest.approx(usage_b := client.get("/v1/usage", headers=B).json()["image_steps"])
            assert usage_b > 0
        print(f"\nB idle p50 {statistics.median(idle):.3f}s p95 {p95(idle):.3f}s; "
              f"flooded p50 {statistics.median(flooded):.3f}s p95 {p95(flooded):.3f}s")
        assert p95(flooded) <= 2 * p95(idle), (idle, flooded)
    finally:
        live.server.stop()


@pytest.mark.parametrize("priority", ["interactive"])
def test_interactive_requests_overtake_a_queued_batch_backlog(tiny_model_dirs, tmp_path, priority):
    """The same flood from a batch tenant; an interactive tenant's request goes before all of it
    (strict classes): it finishes while most of the backlog still waits."""
    keys = tmp_path / "tenants.yaml"
    keys.write_text(yaml.safe_dump({"tenants": [
        {"name": "nightly", "priority": "batch", "keys": ["key-a"]},
        {"name": "chat", "priority": priority, "keys": ["key-b"]},
    ]}))
    config = tiny_config(tiny_model_dirs, ("flux",), runtime={"maxBatchSize": 1, "queueSize": 200})
    config.api_keys_file = str(keys)
    live = start_live(config, handler_factory=PacedFluxHandler)
    try:
        with httpx.Client(base_url=live.url, timeout=120) as client:
            for i in range(30):
                assert client.post("/v1/jobs", json={**FLOOD_JOB, "seed": i}, headers=A).status_code == 202
            assert client.post("/generate", json=SINGLE, headers=B).status_code == 200
            assert client.get("/status").json()["tenants"]["nightly"]["queued"] >= 25
    finally:
        live.server.stop()


def test_a_server_used_directly_holds_its_own_tenants_budgets_and_a_shared_queue_keeps_the_tenant(
        tiny_model_dirs, tmp_path, redis_server):
    """No router: the server's own YAML keys file. Its budget refuses past it (429 with the
    X-RateLimit headers), counted in the shared queue's Redis; a job taken from the Redis queue runs
    under its tenant's name."""
    keys = tmp_path / "tenants.yaml"
    cost = 64 * 64 / 1024**2 * 2  # the requests below
    keys.write_text(yaml.safe_dump({"tenants": [
        {"name": "metered", "keys": ["key-a"], "imageStepsPerMinute": 3 * cost},
        {"name": "other", "keys": ["key-b"]},
    ]}))
    config = tiny_config(tiny_model_dirs, ("flux",), runtime={"maxBatchSize": 1})
    config.api_keys_file = str(keys)
    config.jobs = JobsConfig.model_validate({"redisUrl": redis_server.url, "resultStore": {"dir": str(tmp_path / "results")}})
    live = start_live(config)
    body = {"model": "tiny-flux", "prompt": "a kite", "width": 64, "height": 64, "steps": 2}
    try:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            answers = [client.post("/generate", json=body, headers=A) for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]
            refused = answers[3]
            assert refused.json()["error"]["code"] == "quota_exceeded"
            assert refused.headers["x-ratelimit-limit"] == f"{3 * cost:g}" and float(refused.headers["x-ratelimit-remaining"]) < cost
            usage = client.get("/v1/usage", headers=A).json()
            assert usage["shared"] is True and usage["remaining_image_steps"] < cost
            assert client.post("/generate", json=body, headers=B).status_code == 200  # another tenant: no budget
            created = client.post("/v1/jobs", json=body, headers=B)
            assert created.status_code == 202
            deadline = time.monotonic() + 60
            while client.get(f"/v1/jobs/{created.json()['id']}", headers=B).json()["status"] != "succeeded":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            tenants = client.get("/status").json()["tenants"]
            assert tenants["other"]["image_steps"] == pytest.approx(2 * cost)  # the /generate and the queued job
            assert tenants["metered"]["image_steps"] == pytest.approx(3 * cost)
    finally:
        live.server.stop()
