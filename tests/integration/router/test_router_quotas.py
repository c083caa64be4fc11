"""Tenant budgets at the router, shared in Redis: two real `tinyimg router` processes on one Redis
in front of one real `tinyimg serve` (tiny Flux), a tenants keys file with a budget for one tenant
and none for another. Load is sent to both routers for 30 s; what they admit together is the
budget (a minute's worth at once, then its rate), not twice it; over-quota work never reaches the
pod; the tenant without a budget is never refused."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
import yaml

from tests.support.processes import running_router, spawn, wait_until_ready
from tests.support.tiny_models import tiny_config, tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.core.tenants import image_steps

BUDGET = 0.75  # image-steps per minute: 96 of the requests below
BODY = {"model": "tiny-flux", "prompt": "a kite", "width": 64, "height": 64, "steps": 2}
COST = image_steps(64, 64, 2, 1)
LOAD_SECONDS = 30.0
TENANTS = {"tenants": [
    {"name": "metered", "priority": "standard", "keys": ["metered-key"], "imageStepsPerMinute": BUDGET},
    {"name": "free", "priority": "interactive", "keys": ["free-key"]},
]}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def two_routers(tiny_model_dirs, tmp_path, redis_server):
    secret = tmp_path / "job-secret"
    secret.write_text("s" * 40)
    keys = tmp_path / "tenants.yaml"
    keys.write_text(yaml.safe_dump(TENANTS))
    config = tiny_config(tiny_model_dirs, ("flux",), runtime={"maxBatchSize": 4, "queueSize": 256})
    config.router_secret_file = str(secret)  # the pod believes the tenant header from these routers only
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(config.to_wire()))
    pod = wait_until_ready(spawn("pod", ["serve", "--config", str(tmp_path / "pod.yaml")], tmp_path))
    args = [f"--backend=tiny-flux={pod.url}", "--api-keys-file", str(keys), "--redis-url", redis_server.url,
            "--job-secret-file", str(secret)]
    try:
        with running_router(args, tmp_path, "router-a") as a, running_router(args, tmp_path, "router-b") as b:
            yield pod, a, b
    finally:
        pod.stop()


def test_two_routers_sharing_redis_admit_one_budget_and_never_forward_over_quota_work(two_routers):
    pod, a, b = two_routers
    outcomes: Counter[tuple[str, int]] = Counter()
    refusals: list[httpx.Response] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + LOAD_SECONDS

    def send(url: str, key: str, pause: float) -> None:
        with httpx.Client(base_url=url, headers=auth(key), timeout=60) as client:
            while time.monotonic() < stop_at:
                answer = client.post("/generate", json=BODY)
                with lock:
                    outcomes[key, answer.status_code] += 1
                    if answer.status_code == 429 and len(refusals) < 5:
                        refusals.append(answer)
                time.sleep(pause if answer.status_code == 200 else 0.05)

    threads = [threading.Thread(target=send, args=(url, "metered-key", 0.0)) for url in (a.url, b.url, a.url, b.url)]
    threads += [threading.Thread(target=send, args=(url, "free-key", 0.4)) for url in (a.url, b.url)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    admitted = outcomes["metered-key", 200] * COST
    allowed = BUDGET + BUDGET * elapsed / 60  # a minute's worth at once, then the rate
    print(f"\ntwo routers, {elapsed:.1f} s: admitted {admitted:.4f} image-steps of {allowed:.4f} allowed "
          f"({admitted / allowed:.3f}); metered 200/429 {outcomes['metered-key', 200]}/{outcomes['metered-key', 429]}, "
          f"free 200/429 {outcomes['free-key', 200]}/{outcomes['free-key', 429]}")
    assert outcomes["metered-key", 429] > 50  # it asked for far more than that
    assert admitted == pytest.approx(allowed, rel=0.10), (outcomes, elapsed)
    assert set(k for k, _ in outcomes if k == "free-key") and outcomes["free-key", 429] == 0, outcomes
    assert outcomes["free-key", 200] >= 2 * LOAD_SECONDS / 0.4 * 0.5  # served all along

    for refused in refusals:
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded" and error["tenant"] == "metered"
        assert "budget of 0.75 image-steps per minute" in error["message"]
        assert refused.headers["x-ratelimit-limit"] == "0.75"
        assert 0 <= float(refused.headers["x-ratelimit-remaining"]) < COST
        assert 0 < int(refused.headers["x-ratelimit-reset"]) <= 60
        assert int(refused.headers["retry-after"]) >= 1

    # What reached the pod: exactly the admitted requests, each under its tenant's name.
    tenants = httpx.get(f"{pod.url}/status").json()["tenants"]
    assert tenants["metered"]["image_steps"] == pytest.approx(admitted)
    assert tenants["free"]["image_steps"] == pytest.approx(outcomes["free-key", 200] * COST)
    assert "default" not in tenants  # no request reached it without its tenant

    # Both routers see the one shared budget.
    usages = [httpx.get(f"{url}/v1/usage", headers=auth("metered-key")).json() for url in (a.url, b.url)]
    for usage in usages:
        assert (usage["tenant"], usage["priority"], usage["image_steps_per_minute"], usage["shared"]) == \
            ("metered", "standard", BUDGET, True)
        assert usage["image_steps"] == pytest.approx(admitted)  # from the pod, as last polled
    assert usages[0]["remaining_image_steps"] == pytest.approx(usages[1]["remaining_image_steps"], abs=2 * COST)
    free = httpx.get(f"{a.url}/v1/usage", headers=auth("free-key")).json()
    assert (free["tenant"], free["priority"], free["image_steps_per_minute"], free["remaining_image_steps"]) == \
        ("free", "interactive", None, None)
    assert httpx.get(f"{a.url}/v1/usage").status_code == 401

    metrics = httpx.get(f"{a.url}/metrics").text + httpx.get(f"{b.url}/metrics").text
    assert 'tinyimg_router_tenant_rejected_total{reason="image_steps",tenant="metered"}' in metrics
    assert 'tenant="free"' not in metrics.split("tinyimg_router_tenant_rejected_total", 1)[1].split("# HELP", 1)[0]
