"""Tenants in the cluster: the chart installed with real helm and `router.tenants` (two tenants,
one with a budget), one tiny Flux pod with batches of one. Tenant A floods 100 small jobs through
the router Service (past its budget: the router refuses the rest), tenant B's single requests
keep about their idle latency, the pod queues under each tenant's name (the router's signed
header), and a real Prometheus scraping the pods as the chart's PodMonitor says finds data for
every panel of the dashboard's tenant row."""

from __future__ import annotations

import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from tests.cluster import monitoring
from tests.cluster.conftest import NAMESPACE, RELEASE, imagemodel_manifest, install_chart, model_pods

MODEL = "tiny-flux"
A = {"Authorization": "Bearer flood-key"}
B = {"Authorization": "Bearer web-key"}
FLOOD_JOB = {"model": MODEL, "prompt": "a product shot", "width": 128, "height": 128, "steps": 4}
SINGLE = {"model": MODEL, "prompt": "a lighthouse", "width": 128, "height": 128, "steps": 8}
BUDGET = 4.0  # image-steps per minute: 64 of A's jobs at once (1/16 each), then one every 0.94 s
TENANTS = [
    {"name": "flooder", "priority": "batch", "keys": ["flood-key"], "imageStepsPerMinute": BUDGET},
    {"name": "webapp", "priority": "standard", "keys": ["web-key"], "imageStepsPerMinute": 1000},
]
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def tenants(cluster, tiny_model_dirs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tenants")
    values = workdir / "values.yaml"
    # One router replica: without a Redis, each replica counts budgets alone (with redis.enabled
    # they share one: tests/integration/router/test_router_quotas.py).
    values.write_text(yaml.safe_dump({"router": {"tenants": TENANTS, "replicas": 1}}))
    install_chart(cluster, "--values", str(values))
    manifest = workdir / "model.yaml"
    manifest.write_text(imagemodel_manifest("flux", tiny_model_dirs["flux"], MODEL, replicas=1,
                                            runtime={"device": "cpu", "cpuFallback": True, "maxBatchSize": 1, "queueSize": 128}))
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(manifest))
    cluster.wait_until(lambda: len(model_pods(cluster, MODEL)) == 1, timeout=180, what="the model pod ready")
    url = cluster.service_url(NAMESPACE, f"{RELEASE}-router")
    cluster.wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=5).json().get("models", {}).get(MODEL, {})
                       .get("ready_replicas") == 1, timeout=60, what="the router sees the pod")
    return cluster, url


def timed(url: str) -> float:
    start = time.perf_counter()
    answer = httpx.post(f"{url}/generate", json=SINGLE, headers=B, timeout=60)
    assert answer.status_code == 200, answer.text[:300]
    return time.perf_counter() - start


def test_a_flood_through_the_service_neither_starves_another_tenant_nor_passes_its_budget(tenants):
    cluster, url = tenants
    assert httpx.post(f"{url}/generate", json=SINGLE, timeout=60).status_code == 401  # keys are on
    timed(url)  # warm
    idle = [timed(url) for _ in range(6)]
    with ThreadPoolExecutor(16) as pool:  # at once, as a batch client would
        sent = list(pool.map(lambda i: httpx.post(f"{url}/v1/jobs", json={**FLOOD_JOB, "seed": i}, headers=A, timeout=30),
                             range(100)))
    refused = [r for r in sent if r.status_code == 429]
    assert len(sent) - len(refused) >= 60 and refused, [r.status_code for r in sent]
    assert {r.json()["error"]["code"] for r in refused} == {"quota_exceeded"}
    assert refused[0].headers["x-ratelimit-limit"] == "4"
    flooded = [timed(url) for _ in range(6)]
    pod = model_pods(cluster, MODEL)[0]
    status = httpx.get(f"http://{pod['status']['podIP']}:8000/status", timeout=10).json()["tenants"]
    assert status["flooder"]["queued"] > 10, status  # B was measured while A's backlog waited on the pod
    assert "default" not in status  # every request reached the pod under its tenant's name
    print(f"\ncluster: B idle p50 {statistics.median(idle):.3f}s max {max(idle):.3f}s; "
          f"flooded p50 {statistics.median(flooded):.3f}s max {max(flooded):.3f}s; A refused {len(refused)}")
    assert max(flooded) <= 2 * max(idle), (idle, flooded)
    usage = httpx.get(f"{url}/v1/usage", headers=A, timeout=10).json()
    assert usage["tenant"] == "flooder" and usage["remaining_image_steps"] < 1


def test_the_dashboards_tenant_panels_have_data_in_prometheus(tenants, tmp_path):
    cluster, url = tenants
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (Debian package `prometheus`; .ci/run installs it)")
    rendered = cluster.helm("template", RELEASE, "charts/tinyimg", "-n", NAMESPACE, "--set", "monitoring.podMonitor.enabled=true",
                            "--show-only", "templates/podmonitor.yaml").stdout
    config = monitoring.scrape_config(yaml.safe_load(rendered), cluster.list("v1/pods", NAMESPACE))
    targets = len(config["scrape_configs"][0]["static_configs"])
    address = cluster.call(lambda: cluster.kubelet.pool.take([9090]))
    as_pod = cluster.identity("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    with monitoring.running_prometheus(config, tmp_path, address, as_pod) as prom:
        cluster.wait_until(lambda: len(httpx.get(f"{prom}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]) == targets,
                           timeout=30, what="prometheus has its targets")
        time.sleep(2)
        for i in range(30):  # work and refusals while it scrapes
            httpx.post(f"{url}/v1/jobs", json={**FLOOD_JOB, "seed": 1000 + i}, headers=A, timeout=30)
            if i % 5 == 0:
                timed(url)
        time.sleep(4)
        panels: dict[str, bool] = {}
        for title, expr in monitoring.dashboard_queries():
            if "tenant" in expr:
                panels[title] = panels.get(title, False) or bool(monitoring.query(prom, expr))
        served = monitoring.query(prom, 'sum by (tenant) (tinyimg_tenant_image_steps_total)')
    assert len(panels) == 4 and all(panels.values()), panels
    assert {s["metric"]["tenant"] for s in served} == {"flooder", "webapp"}
