"""The README's deploy path on the emulated cluster, then what happens to a running install:
scale, a killed pod, a rollout, a bad model, deletion and uninstall. Tests run in file order on
one cluster (see conftest)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from tests.cluster import monitoring
from tests.cluster.conftest import (
    HELM_INSTALL,
    IMAGEMODELS,
    NAMESPACE,
    account_grants_and_needs,
    condition,
    imagemodel_manifest,
    model_pods,
    served_count,
)
from tests.support.cluster import rbac
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]
SDXL, FLUX = "tiny-sdxl", "tiny-flux"


def generate(url: str, model: str, width: int = 64, height: int = 48, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{url}/generate", json={"model": model, "prompt": "a cat", "width": width, "height": height},
                      headers={"Accept": "image/png"}, timeout=timeout)


def assert_png(resp: httpx.Response, width: int, height: int) -> None:
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(resp.content)).size == (width, height)


class Load:
    """Requests in a loop on a thread; each outcome recorded with when it started and ended."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model, self.results = url, model, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = generate(self.url, self.model, timeout=30).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.results.append((started, time.monotonic(), status))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_the_docs_deploy_page_is_what_runs():
    """The commands below are the docs' (Getting started, On Kubernetes), word for word where they have no placeholder."""
    section = (ROOT / "docs" / "getting-started" / "cluster.md").read_text()
    flat = re.sub(r"\\\n\s*", "", section)
    assert " ".join(["helm", *HELM_INSTALL]) in flat
    for command in ("kubectl -n tinyimg apply -f my-model.yaml",
                    "kubectl -n tinyimg wait --for=condition=Ready imagemodel/my-model --timeout=10m",
                    "kubectl -n tinyimg get imagemodels",
                    "helm uninstall tinyimg -n tinyimg",
                    "kubectl delete crd imagemodels.tinyimg.io"):
        assert command in flat, command


def test_install_two_models_ready_and_served_through_the_router(installed, tiny_model_dirs, tmp_path):
    cluster = installed
    for family in ("sdxl", "flux"):
        manifest = tmp_path / f"{family}.yaml"
        manifest.write_text(imagemodel_manifest(family, tiny_model_dirs[family]))
        cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest))
    for name in (SDXL, FLUX):
        cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"imagemodel/{name}", "--timeout=180s", timeout=200)
    table = cluster.kubectl("-n", NAMESPACE, "get", "imagemodels").stdout.splitlines()
    assert table[0].split() == ["NAME", "FAMILY", "READY", "REPLICAS", "DESIRED", "AGE"]
    assert sorted(row.split()[:5] for row in table[1:]) == [[FLUX, "flux", "True", "1", "1"], [SDXL, "sdxl", "True", "1", "1"]]

    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    cluster.wait_until(lambda: {m["name"] for m in httpx.get(f"{url}/models", timeout=10).json()["models"]} >= {SDXL, FLUX},
                       timeout=30, what="the router lists both models")
    models = {m["name"]: m for m in httpx.get(f"{url}/models", timeout=10).json()["models"]}
    assert (models[SDXL]["family"], models[FLUX]["family"]) == ("sdxl", "flux")
    status = httpx.get(f"{url}/status", timeout=10).json()
    assert sorted(m for pod in status["pods"] for m in pod["models"]) == [FLUX, SDXL]
    assert status["totals"]["reachable_pods"] == 2 and all(pod["reachable"] for pod in status["pods"])
    assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    health = httpx.get(f"{url}/health/ready", timeout=10).json()
    assert {name: m["ready_replicas"] for name, m in health["models"].items()} == {SDXL: 1, FLUX: 1}
    assert_png(generate(url, SDXL, 64, 64), 64, 64)
    assert_png(generate(url, FLUX, 64, 48), 64, 48)


def test_scale_subresource_adds_a_pod_and_the_router_spreads_requests(installed):
    cluster = installed
    cluster.kubectl("-n", NAMESPACE, "scale", f"imagemodel/{FLUX}", "--replicas=2")
    cluster.wait_until(lambda: len(model_pods(cluster, FLUX)) == 2, timeout=120, what="two ready flux pods")
    cluster.wait_until(lambda: (condition(cluster.get(IMAGEMODELS, NAMESPACE, FLUX), "Ready").get("status") == "True"
                                and cluster.get(IMAGEMODELS, NAMESPACE, FLUX)["status"].get("readyReplicas") == 2),
                       timeout=30, what="status shows 2 ready")
    pods = model_pods(cluster, FLUX)
    before = {p["metadata"]["name"]: served_count(p, FLUX) for p in pods}
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    cluster.wait_until(lambda: all(router_ready_replicas(pod, FLUX) == 2 for pod in router_pods(cluster)),
                       timeout=30, what="every router sees two ready flux pods")
    # Eight clients at once, three requests each: the least-loaded choice must use both pods. (One
    # client in a loop may rightly stay on one pod: idle pods are chosen by their measured speed.)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: generate(url, FLUX).status_code, range(24)))
    assert statuses == [200] * 24
    after = {p["metadata"]["name"]: served_count(p, FLUX) for p in pods}
    per_pod = {name: after[name] - before[name] for name in after}
    assert sum(per_pod.values()) == 24 and all(n >= 3 for n in per_pod.values()), per_pod


def router_pods(cluster) -> list[dict]:
    return cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "router"})


def router_ready_replicas(pod: dict, model: str) -> int:
    """What one router pod's /health/ready says of ``model`` (asked on its own address)."""
    health = httpx.get(f"http://{pod['status']['podIP']}:8000/health/ready", timeout=10).json()
    return int(health.get("models", {}).get(model, {}).get("ready_replicas", 0))


def _container_pid(cluster, pod_name: str) -> int:
    def find() -> int:
        for runtime in cluster.kubelet.pods.values():
            if runtime.name == pod_name:
                return runtime.containers[0].popen.pid
        raise KeyError(pod_name)
    return cluster.call(find)


def test_sigkilled_model_pod_is_restarted_and_clients_see_no_5xx(installed):
    cluster = installed
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    victim = model_pods(cluster, FLUX)[0]["metadata"]["name"]
    with Load(url, FLUX) as load:
        time.sleep(2)
        killed_at = time.monotonic()
        os.killpg(_container_pid(cluster, victim), signal.SIGKILL)
        cluster.wait_until(lambda: (p := cluster.get("v1/pods", NAMESPACE, victim))
                           and p["status"]["containerStatuses"][0]["restartCount"] == 1
                           and condition(p, "Ready").get("status") == "True",
                           timeout=120, what="the killed pod restarted and ready again")
        time.sleep(1)
    started_after = [status for started, _, status in load.results if started > killed_at + 0.05]
    in_flight = [status for started, ended, status in load.results if started <= killed_at < ended]
    assert started_after and all(s == 200 for s in started_after), started_after
    assert len(in_flight) <= 1
    before = served_count(cluster.get("v1/pods", NAMESPACE, victim), FLUX)

    def victim_serves_again() -> bool:  # the router re-added it: requests reach it again
        assert generate(url, FLUX).status_code == 200
        return served_count(cluster.get("v1/pods", NAMESPACE, victim), FLUX) > before
    cluster.wait_until(victim_serves_again, timeout=60, interval=0.1, what="the router sends to the restarted pod")


# Dashboard queries that need an event this install cannot produce, and why.
NO_DATA_EXPECTED = {
    'sum by (reason) (rate(tinyimg_router_rejected_total{namespace=~".*"}[30s]))':
        "the router rejects only for API keys or rate limits, neither enabled by the README's install",
    'sum by (model) (rate(tinyimg_router_retries_total{namespace=~".*", model=~".*"}[30s]))':
        "a retry needs a pod that dies between the router's choice and its connect; the SIGKILL "
        "scenario hits that window only sometimes (the series exists only after a first retry)",
    # Cold starts (tests/cluster/test_autoscaling.py): only an autoscaled model at zero has them.
    'sum by (model) (tinyimg_router_waiting_requests{namespace=~".*", model=~".*"})':
        "a request is held only for an autoscaled model with no ready pod; the README's install has none",
    'sum by (model, outcome) (rate(tinyimg_router_held_requests_total{namespace=~".*", model=~".*"}[30s]))': "as above",
    'histogram_quantile(0.95, sum by (model, le) (rate(tinyimg_router_cold_start_duration_seconds_bucket'
    '{namespace=~".*", model=~".*"}[30s])))': "as above",
    # Tenants (tests/cluster/test_tenants.py): the README's install has no keys file, so every
    # request is tenant "default", with no limits to be refused by and no budget to count.
    'sum by (tenant, reason) (rate(tinyimg_tenant_rejected_total{namespace=~".*", tenant=~".*"}[30s]))':
        "a pod refuses for a tenant only past its maxQueued, or a full queue; this install fills neither",
    'sum by (tenant, reason) (rate(tinyimg_router_tenant_rejected_total{namespace=~".*", tenant=~".*"}[30s]))':
        "the router refuses for a tenant only over its budget; this install has no tenants",
    'sum by (tenant) (rate(tinyimg_router_tenant_image_steps_total{namespace=~".*", tenant=~".*"}[30s])) * 60': "as above",
    'sum by (outcome) (rate(tinyimg_webhook_deliveries_total{namespace=~".*"}[5m]))':
        "webhooks need an allow-list in the server's config (none by default) and a job that names one",
}


def test_prometheus_scrapes_the_pods_the_chart_selects_and_every_panel_has_data(installed, tmp_path):
    cluster = installed
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (Debian package `prometheus`; .ci/run installs it)")
    rendered = cluster.helm("template", "tinyimg", "charts/tinyimg", "-n", NAMESPACE, "--set", "monitoring.podMonitor.enabled=true",
                            "--show-only", "templates/podmonitor.yaml").stdout
    config = monitoring.scrape_config(yaml.safe_load(rendered), cluster.list("v1/pods", NAMESPACE))
    scraped = sorted(t["labels"]["pod"].rsplit("-", 2)[0] for t in config["scrape_configs"][0]["static_configs"])
    assert scraped == [FLUX, FLUX, SDXL, "tinyimg-router", "tinyimg-router"]
    address = cluster.call(lambda: cluster.kubelet.pool.take([9090]))
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    # Prometheus runs as a pod of the `monitoring` namespace would, for the chart's NetworkPolicy.
    as_pod = cluster.identity("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    with monitoring.running_prometheus(config, tmp_path, address, as_pod) as prom:

        def active_targets() -> list[dict]:
            return httpx.get(f"{prom}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]

        # Prometheus hands new targets to its scrapers in batches (every 5 s): wait for all five.
        cluster.wait_until(lambda: len(active_targets()) == 5, timeout=30, what="prometheus has its 5 targets")
        for _ in range(3):
            assert generate(url, FLUX).status_code == 200 and generate(url, SDXL).status_code == 200
        bad = httpx.post(f"{url}/generate", json={"model": FLUX, "prompt": "x", "width": 100000}, timeout=30)
        assert bad.status_code == 422  # an error for the error panels
        time.sleep(1.5)
        for _ in range(3):
            assert generate(url, FLUX).status_code == 200
        targets = active_targets()
        cluster.wait_until(lambda: all(t["health"] == "up" for t in active_targets()), timeout=20, what="every target scraped")
        time.sleep(3)
        empty = [(title, expr) for title, expr in monitoring.dashboard_queries()
                 if expr not in NO_DATA_EXPECTED and not monitoring.query(prom, expr)]
    assert len(targets) == 5
    assert empty == [], empty


def test_a_live_setting_applies_in_place_without_a_restart(installed):
    """defaults.steps patched: the operator updates the ConfigMap only, the pods (same UIDs) read
    it again; the router's /models shows the new default within 10 s; no request fails."""
    cluster = installed
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    uids = {p["metadata"]["uid"] for p in model_pods(cluster, FLUX)}

    def router_default() -> int:
        models = httpx.get(f"{url}/models", timeout=10).json()["models"]
        return next(m["defaults"]["steps"] for m in models if m["name"] == FLUX)
    assert router_default() != 3
    with Load(url, FLUX) as load:
        patched = time.monotonic()
        cluster.kubectl("-n", NAMESPACE, "patch", "imagemodel", FLUX, "--type=merge", "-p", '{"spec": {"defaults": {"steps": 3}}}')
        cluster.wait_until(lambda: router_default() == 3, timeout=10, interval=0.2, what="the new default through the router")
        seen_after = time.monotonic() - patched
        for pod in model_pods(cluster, FLUX):  # every pod, not only the one the router asked
            cluster.wait_until(lambda p=pod: httpx.get(f"http://{p['status']['podIP']}:8000/models", timeout=10)
                               .json()["models"][0]["defaults"]["steps"] == 3, timeout=10, what="each pod applies it")
    print(f"\nlive setting seen through the router {seen_after:.1f} s after the patch")
    assert {p["metadata"]["uid"] for p in model_pods(cluster, FLUX, ready_only=False)} == uids
    assert load.results and all(status == 200 for *_, status in load.results), load.results
    for pod in model_pods(cluster, FLUX):
        status = httpx.get(f"http://{pod['status']['podIP']}:8000/status", timeout=10).json()["config"]
        assert status["generation"] == 2 and status["restart_needed"] == []
    # The ImageModel says which config generation each pod runs (the operator reads their /status).
    names = sorted(p["metadata"]["name"] for p in model_pods(cluster, FLUX))
    cluster.wait_until(lambda: [(p["name"], p["configGeneration"]) for p in
                                cluster.get(IMAGEMODELS, NAMESPACE, FLUX)["status"].get("pods") or []]
                       == [(n, 2) for n in names], timeout=20, interval=0.5, what="status.pods: generation 2 on each pod")


def test_spec_change_rolls_pods_one_by_one_while_requests_succeed(installed):
    """A setting only a restart applies (VAE tiling) rolls the pods, one at a time."""
    cluster = installed
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    old = {p["metadata"]["name"] for p in model_pods(cluster, FLUX)}
    seen_pods, seen_ready = [], []
    with Load(url, FLUX) as load:
        cluster.kubectl("-n", NAMESPACE, "patch", "imagemodel", FLUX, "--type=merge", "-p", '{"spec": {"runtime": {"vaeTiling": true}}}')

        def rolled() -> bool:
            pods = model_pods(cluster, FLUX, ready_only=False)
            seen_pods.append(len(pods))
            seen_ready.append(len([p for p in pods if condition(p, "Ready").get("status") == "True"]))
            names = {p["metadata"]["name"] for p in model_pods(cluster, FLUX)}
            return len(names) == 2 and not names & old and len(pods) == 2
        cluster.wait_until(rolled, timeout=180, interval=0.1, what="both flux pods replaced")
    assert max(seen_pods) <= 3  # maxSurge 1 (no GPUs): one extra pod at a time
    assert min(seen_ready) >= 2  # maxUnavailable 0
    assert load.results and all(status == 200 for *_, status in load.results), load.results
    for pod in model_pods(cluster, FLUX):  # each new pod serves the spec (the live setting too)
        served = httpx.get(f"http://{pod['status']['podIP']}:8000/models", timeout=10).json()["models"]
        assert [m["defaults"]["steps"] for m in served if m["name"] == FLUX] == [3]
        assert httpx.get(f"http://{pod['status']['podIP']}:8000/status", timeout=10).json()["config"]["generation"] == 1


def test_missing_source_is_not_ready_and_refused_by_the_router_while_others_serve(installed, tmp_path):
    cluster = installed
    manifest = tmp_path / "broken.yaml"
    # The startup probe gives up after startupTimeoutSeconds (10 s here, probe periods compressed to
    # 0.5 s): the kubelet kills the server, which stays up with its model failed, and restarts it.
    manifest.write_text(imagemodel_manifest("flux", tmp_path / "does-not-exist", name="broken", startupTimeoutSeconds=200))
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest))

    def pod_reason() -> str | None:  # the server stays up, its model failed, and says why
        pods = cluster.list("v1/pods", NAMESPACE, labels={"tinyimg.io/model": "broken"})
        ip = pods and pods[0].get("status", {}).get("podIP")
        try:
            models = httpx.get(f"http://{ip}:8000/models", timeout=5).json()["models"] if ip else []
        except httpx.HTTPError:
            return None
        return next((m.get("reason") or m.get("error") or str(m) for m in models if m.get("state") == "failed"), None)
    reason = cluster.wait_until(pod_reason, timeout=90, what="the broken model's pod reports it failed")
    assert "does-not-exist" in reason
    model = cluster.get(IMAGEMODELS, NAMESPACE, "broken")
    assert condition(model, "Ready")["status"] == "False"
    # The operator reads the crash from the pod (restarted after an error, not ready since): Degraded says which.
    degraded = cluster.wait_until(
        lambda: (c := condition(cluster.get(IMAGEMODELS, NAMESPACE, "broken"), "Degraded"))["status"] == "True" and c,
        timeout=90, what="the broken model is Degraded with the pod's reason")
    assert degraded["reason"] == "PodFailing" and degraded["message"].startswith("broken-"), degraded
    assert "/server: " in degraded["message"] and len(degraded["message"]) <= 400, degraded
    # The reason is the server's own (its termination message file), not the log's last lines.
    assert "model broken failed" in degraded["message"] and "does-not-exist" in degraded["message"], degraded
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    resp = generate(url, "broken")
    assert resp.status_code == 503 and resp.json()["error"]["message"], resp.text
    assert_png(generate(url, FLUX), 64, 48)
    cluster.kubectl("-n", NAMESPACE, "delete", "imagemodel", "broken")


def test_deleting_an_imagemodel_collects_its_children_and_processes(installed):
    cluster = installed
    pids_before = set(cluster.pod_processes())
    sdxl_pids = {_container_pid(cluster, p["metadata"]["name"]) for p in model_pods(cluster, SDXL)}
    cluster.kubectl("-n", NAMESPACE, "delete", "imagemodel", SDXL)
    cluster.wait_until(lambda: not cluster.list("v1/pods", NAMESPACE, labels={"tinyimg.io/model": SDXL}),
                       timeout=60, what="sdxl pods gone")
    for resource, name in (("apps/v1/deployments", SDXL), ("v1/services", SDXL), ("v1/configmaps", f"{SDXL}-config")):
        assert cluster.get(resource, NAMESPACE, name) is None, (resource, name)
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    cluster.wait_until(lambda: SDXL not in {m["name"] for m in httpx.get(f"{url}/models", timeout=10).json()["models"]},
                       timeout=20, what="the router stops listing it")
    assert sdxl_pids <= pids_before and not sdxl_pids & set(cluster.pod_processes())


# Permissions the chart grants that the scenarios above do not exercise, and why they stay.
UNUSED_BUT_NEEDED: dict[tuple[str, str, str], str] = {
    ("", "events", "create"): "kopf posts an Event when a handler fails and the operator one for a spec the "
                              "CRD schema lets through but ModelSpec refuses; no scenario here fails that way",
    ("", "persistentvolumeclaims", "create"): "the weight-cache PVC of a model with spec.cache.size; tiny models have none",
    ("", "persistentvolumeclaims", "get"): "as above",
    ("", "persistentvolumeclaims", "patch"): "as above, when its size or class changes",
    ("", "services", "patch"): "puts back a model Service edited by hand or changed by an operator upgrade",
    ("apps", "deployments", "delete"): "a canary revision's Deployment when its rollout ends: tests/cluster/test_rollouts.py",
    ("", "configmaps", "delete"): "a canary revision's ConfigMap, as above",
    ("batch", "jobs", "create"): "cache.preload's loader Job: tests/cluster/test_preload.py",
    ("batch", "jobs", "delete"): "the loader Job of an earlier weight revision (tinyimg_operator.preload.apply_preload)",
    # Candidates for removal (chart owner): unused since the operator stopped scanning (handlers.py).
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): "unused since scanning is off; kept until the chart drops it",
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): "as above",
    ("tinyimg.io", "imagemodels/status", "get"): "status is only patched (kopf and the applier); unused, kept until the chart drops it",
    # The built-in autoscaler (chart default): used in tests/cluster/test_autoscaling.py.
    ("tinyimg.io", "imagemodels", "patch"): "the router's demand annotation (scale from zero)",
}


@pytest.mark.parametrize("account", ["tinyimg-operator", "tinyimg-router"])
def test_every_request_is_allowed_by_the_chart_rbac_and_every_grant_is_used(installed, account):
    granted, needs = account_grants_and_needs(installed, account)
    assert needs, f"no request recorded for {account}"
    refused = sorted({need for need in needs if not rbac.allows(granted, need)}, key=str)
    assert refused == [], f"{account} made requests its Roles do not allow (403 in a cluster): {refused}"
    unused = sorted((g.group, g.resource, g.verb) for g in granted
                    if not rbac.used(g, needs) and (g.group, g.resource, g.verb) not in UNUSED_BUT_NEEDED)
    assert unused == [], f"{account} is granted more than it used; use it in a scenario or give the reason: {unused}"


@pytest.mark.parametrize("step", ["helm uninstall", "delete the CRD"])
def test_uninstall_then_crd_deletion_leave_nothing_running(installed, step):
    cluster = installed
    if step == "helm uninstall":
        cluster.helm("uninstall", "tinyimg", "-n", NAMESPACE)
        cluster.wait_until(lambda: not cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "router"})
                           and not cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "operator"}),
                           timeout=60, what="operator and router pods gone")
        assert cluster.get(IMAGEMODELS, NAMESPACE, FLUX) is not None  # the README: models outlive the release
    else:
        cluster.kubectl("delete", "crd", "imagemodels.tinyimg.io")
        cluster.wait_until(lambda: not cluster.list("v1/pods"), timeout=60, what="every pod gone")
        cluster.wait_until(lambda: not cluster.pod_processes(), timeout=30, what="every process gone")
        assert cluster.list("apps/v1/deployments") == []
