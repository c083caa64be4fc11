"""Autoscaling on the emulated cluster: the chart's operator scales ImageModels with their load,
to zero when idle, and the router holds a request for a model at zero while a pod starts. Real
helm, operator, router and model-server processes; delays are seconds (the operator reads every
0.5 s here, over a 2 s window) so the module stays within a few minutes on 2 cores.

Tests run in file order on one cluster (see conftest). Timings measured here are printed for
BENCHMARKS.md (run with -s)."""

from __future__ import annotations

import io
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.conftest import (
    IMAGEMODELS,
    NAMESPACE,
    account_grants_and_needs,
    condition,
    imagemodel_manifest,
    install_chart,
    model_pods,
)
from tests.support.cluster import rbac
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg_operator.autoscaling import from_time

FIXED, BURST, IDLE, COLD, NEVER = "fixed", "burst", "idle", "cold", "never"
AUTOSCALER_ENV = ["--set", "operator.extraEnv.TINYIMG_AUTOSCALE_INTERVAL_SECONDS=0.5",
                  "--set", "operator.extraEnv.TINYIMG_AUTOSCALE_WINDOW_SECONDS=2"]
# Enough steps that a request takes a while, so a burst builds a queue a tiny model cannot hide.
SLOW = {"model": BURST, "prompt": "a cat", "width": 64, "height": 64, "steps": 12}


@pytest.fixture(scope="module")
def autoscaled(cluster):
    return install_chart(cluster, *AUTOSCALER_ENV)


def apply_model(cluster, tmp_path, name: str, source, **spec: Any) -> None:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(imagemodel_manifest("flux", source, name=name, **spec))
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest))


def replicas(cluster, name: str) -> int:
    return cluster.get("apps/v1/deployments", NAMESPACE, name)["spec"]["replicas"]


def history(cluster, name: str) -> list[dict[str, Any]]:
    return ((cluster.get(IMAGEMODELS, NAMESPACE, name) or {}).get("status", {}).get("autoscaling") or {}).get("history") or []


def router_metric(cluster, name: str, **labels: str) -> float:
    """Summed over every router pod (the chart runs two; the Service spreads requests over them)."""
    total = 0.0
    for pod in cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "router"}):
        text = httpx.get(f"http://{pod['status']['podIP']}:8000/metrics", timeout=10).text
        total += sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
    return total


def post(url: str, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{url}/generate", json=body, headers={"Accept": "image/png"}, timeout=timeout)


def assert_png(resp: httpx.Response) -> None:
    assert resp.status_code == 200, resp.text[:300]
    assert Image.open(io.BytesIO(resp.content)).size == (64, 64)


class Watcher:
    """Records the Deployment's replicas of a model every 0.2 s on a thread."""

    def __init__(self, cluster, name: str) -> None:
        self.cluster, self.name, self.seen = cluster, name, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append((time.monotonic(), replicas(self.cluster, self.name)))
            self._stop.wait(0.2)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_autoscaling_off_replicas_never_change(autoscaled, tiny_model_dirs, tmp_path):
    cluster = autoscaled
    apply_model(cluster, tmp_path, FIXED, tiny_model_dirs["flux"], replicas=1)
    cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"imagemodel/{FIXED}", "--timeout=120s", timeout=150)
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    with Watcher(cluster, FIXED) as watch, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(url, {**SLOW, "model": FIXED}), range(16)))
        time.sleep(2)  # four autoscaler periods after the burst
    assert [r.status_code for r in results] == [200] * 16, [(r.status_code, r.text[:300]) for r in results if r.status_code != 200]
    assert {n for _, n in watch.seen} == {1}
    model = cluster.get(IMAGEMODELS, NAMESPACE, FIXED)
    assert "autoscaling" not in model["status"] and model["status"]["desiredReplicas"] == 1
    cluster.kubectl("-n", NAMESPACE, "delete", "imagemodel", FIXED)


def test_burst_scales_up_within_max_and_back_down_after_the_delay(autoscaled, tiny_model_dirs, tmp_path):
    cluster = autoscaled
    apply_model(cluster, tmp_path, BURST, tiny_model_dirs["flux"], replicas=1, autoscaling={
        "enabled": True, "minReplicas": 1, "maxReplicas": 2, "targetQueuePerReplica": 1,
        "scaleUpStabilizationSeconds": 0, "scaleDownDelaySeconds": 3, "scaleToZeroAfterSeconds": 600})
    cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"imagemodel/{BURST}", "--timeout=120s", timeout=150)
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    stop = threading.Event()
    outcomes: list[int] = []

    def client() -> None:
        while not stop.is_set():
            outcomes.append(post(url, SLOW).status_code)

    with Watcher(cluster, BURST) as watch:
        started, wall = time.monotonic(), time.time()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        cluster.wait_until(lambda: len(model_pods(cluster, BURST)) == 2, timeout=90, what="a second ready pod")
        scaled_up = time.monotonic() - started
        time.sleep(2)  # the two pods share the burst
        stop.set()
        for t in threads:
            t.join(60)
        ended = time.monotonic()
        cluster.wait_until(lambda: replicas(cluster, BURST) == 1, timeout=30, what="back to one replica")
        down_after = time.monotonic() - ended
    assert outcomes and set(outcomes) == {200}, outcomes
    assert max(n for _, n in watch.seen) == 2  # bounded by maxReplicas
    assert down_after >= 3, down_after  # not before scaleDownDelaySeconds
    reasons = [(h["from"], h["to"], h["reason"]) for h in history(cluster, BURST)]
    assert reasons[:2] == [(1, 2, "ScaleUp"), (2, 1, "ScaleDown")], reasons

    def scale_events() -> dict[str, dict]:
        return {e["reason"]: e for e in cluster.list("v1/events", NAMESPACE)
                if e.get("involvedObject", {}).get("name") == BURST and e.get("reason") in ("ScaleUp", "ScaleDown")}

    # Events are posted by kopf's posting queue, after the status: wait for them (bounded).
    cluster.wait_until(lambda: len(scale_events()) == 2, timeout=30, what="ScaleUp and ScaleDown events")
    assert "1 -> 2 replicas" in scale_events()["ScaleUp"]["message"]
    table = cluster.kubectl("-n", NAMESPACE, "get", "imagemodel", BURST, "-o", "wide").stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "FAMILY", "READY", "REPLICAS", "DESIRED"] and "LOAD" in table[0]
    decided = from_time(history(cluster, BURST)[0]["time"]) - wall
    print(f"\nBENCH burst: scale-up decided +{decided:.1f}s (1 s resolution), second pod ready {scaled_up:.1f}s after the burst began; "
          f"scaled down {down_after:.1f}s after it ended; {len(outcomes)} requests, all 200")


def test_restart_under_load_does_not_scale_down(autoscaled):
    cluster = autoscaled
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            post(url, SLOW)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    cluster.wait_until(lambda: replicas(cluster, BURST) == 2, timeout=60, what="scaled up under load")
    with Watcher(cluster, BURST) as watch:
        [operator] = cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "operator"})
        cluster.kubectl("-n", NAMESPACE, "delete", "pod", operator["metadata"]["name"])
        cluster.wait_until(lambda: [p for p in cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "operator"})
                                    if condition(p, "Ready").get("status") == "True"
                                    and p["metadata"]["name"] != operator["metadata"]["name"]],
                           timeout=60, what="a new operator pod ready")
        time.sleep(2)  # the new operator's autoscaler has read the load a few times
        stop.set()
        for t in threads:
            t.join(60)
    assert {n for _, n in watch.seen} == {2}, watch.seen
    cluster.kubectl("-n", NAMESPACE, "delete", "imagemodel", BURST)


OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:tinyimg-operator"


def operator_pods(cluster) -> list[dict[str, Any]]:
    return cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "operator"})


def autoscaler_ticks(cluster, name: str, since: int) -> int:
    """Autoscaler runs for ``name`` among the API requests served after index ``since``: a tick is
    the operator's GET of the ImageModel followed by its list of pods (only the autoscaler lists
    pods), so this counts runs that provably happened, not seconds slept."""
    mine = [r for r in cluster.requests()[since:] if r.user == OPERATOR_USER]
    return sum(1 for a, b in itertools.pairwise(mine)
               if (a.verb, a.resource, a.name) == ("get", "imagemodels", name) and (b.verb, b.resource) == ("list", "pods"))


def test_restart_at_idle_does_not_flap(autoscaled, tiny_model_dirs, tmp_path):
    cluster = autoscaled
    # spec.replicas 1 under minReplicas 2: settled at 2, so an operator that resumed from the spec
    # instead of status.autoscaling would scale to 1 and back (a flap the watcher would see).
    apply_model(cluster, tmp_path, IDLE, tiny_model_dirs["flux"], replicas=1, autoscaling={
        "enabled": True, "minReplicas": 2, "maxReplicas": 3, "targetQueuePerReplica": 1,
        "scaleUpStabilizationSeconds": 0, "scaleDownDelaySeconds": 1, "scaleToZeroAfterSeconds": 600})
    cluster.wait_until(lambda: len(model_pods(cluster, IDLE)) == 2, timeout=120, what="two ready pods")
    cluster.wait_until(lambda: ((cluster.get(IMAGEMODELS, NAMESPACE, IDLE)["status"].get("autoscaling") or {})
                                .get("reason") == "Steady"), timeout=30, what="the autoscaler settled")
    before = cluster.get(IMAGEMODELS, NAMESPACE, IDLE)["status"]["autoscaling"]
    pods_before = sorted(p["metadata"]["name"] for p in cluster.list("v1/pods", NAMESPACE, labels={"tinyimg.io/model": IDLE}))
    assert replicas(cluster, IDLE) == 2 and before["desiredReplicas"] == 2 and len(pods_before) == 2
    with Watcher(cluster, IDLE) as watch:
        [operator] = operator_pods(cluster)
        old = operator["metadata"]["name"]
        cluster.kubectl("-n", NAMESPACE, "delete", "pod", old)
        cluster.wait_until(lambda: [p for p in operator_pods(cluster)
                                    if condition(p, "Ready").get("status") == "True" and p["metadata"]["name"] != old]
                           and cluster.get("v1/pods", NAMESPACE, old) is None,
                           timeout=60, what="a new operator pod ready, the old one gone")
        since = len(cluster.requests())
        started = time.monotonic()
        cluster.wait_until(lambda: autoscaler_ticks(cluster, IDLE, since) >= 2, timeout=30,
                           what="the new operator's autoscaler ran twice")
        ran_twice = time.monotonic() - started
        time.sleep(1.5)  # past scaleDownDelaySeconds after those runs: a wrong resume would have acted
    after = cluster.get(IMAGEMODELS, NAMESPACE, IDLE)["status"]["autoscaling"]
    assert len(watch.seen) > 5 and {n for _, n in watch.seen} == {2}, watch.seen
    assert sorted(p["metadata"]["name"] for p in cluster.list("v1/pods", NAMESPACE, labels={"tinyimg.io/model": IDLE})) == pods_before
    assert (after["desiredReplicas"], after["reason"]) == (2, "Steady")
    assert after.get("history") == before.get("history")
    print(f"\nBENCH restart at idle: new operator's autoscaler ran twice {ran_twice:.1f}s after it was ready; "
          f"{len(watch.seen)} readings of the Deployment, all 2 replicas")
    cluster.kubectl("-n", NAMESPACE, "delete", "imagemodel", IDLE)


def test_model_at_zero_holds_the_first_requests_and_scales_up_once(autoscaled, tiny_model_dirs, tmp_path):
    cluster = autoscaled
    apply_model(cluster, tmp_path, COLD, tiny_model_dirs["flux"], replicas=0, autoscaling={
        "enabled": True, "minReplicas": 0, "maxReplicas": 2, "targetQueuePerReplica": 20,
        "scaleDownDelaySeconds": 1, "scaleToZeroAfterSeconds": 3, "coldStartTimeoutSeconds": 90})
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    listed = cluster.wait_until(
        lambda: (m := {m["name"]: m for m in httpx.get(f"{url}/models", timeout=10).json()["models"]}.get(COLD))
        and m["state"] == "scaled-to-zero" and m, timeout=30, what="the router lists the model at zero")
    assert (listed["state"], listed["replicas"]) == ("scaled-to-zero", 0)
    # The router reads the ImageModel, which can come before the operator has made its Deployment.
    cluster.wait_until(lambda: (cluster.get("apps/v1/deployments", NAMESPACE, COLD) or {}).get("spec", {}).get("replicas") == 0,
                       timeout=30, what="the operator made the Deployment at zero")
    body = {**SLOW, "model": COLD, "steps": 2}
    started, wall = time.monotonic(), time.time()
    with ThreadPoolExecutor(10) as pool:
        pending = [pool.submit(post, url, body) for _ in range(9)]
        # An asynchronous job is held like a generation (the tenth request).
        job = pool.submit(lambda: httpx.post(f"{url}/v1/jobs", json=body, timeout=120))
        starting = cluster.wait_until(
            lambda: (m := {m["name"]: m for m in httpx.get(f"{url}/models", timeout=10).json()["models"]}[COLD])
            and m["state"] in ("starting", "loading") and m, timeout=30, what="the model is starting")
        results = [f.result() for f in pending]
        created = job.result()
    first_image = time.monotonic() - started
    for r in results:
        assert_png(r)
    assert created.status_code == 202, created.text[:300]
    status_url = created.json()["status_url"]
    done = cluster.wait_until(lambda: (j := httpx.get(status_url, timeout=10).json()) and j["status"] == "succeeded" and j,
                              timeout=60, what="the held job succeeds")
    assert len(done["images"]) == 1
    assert starting["state"] in ("starting", "loading")
    ups = [h for h in history(cluster, COLD) if h["from"] == 0]
    assert [(h["to"], h["reason"]) for h in ups] == [(1, "ScaleFromZero")]
    # One cold start per router process at most (each asks once, for all its waiting requests);
    # the operator turns them into exactly one scale-up (above).
    routers = len(cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "router"}))
    assert 1 <= router_metric(cluster, "tinyimg_router_demand_triggers_total", model=COLD) <= routers
    assert router_metric(cluster, "tinyimg_router_held_requests_total", model=COLD, outcome="ready") == 10
    assert router_metric(cluster, "tinyimg_router_waiting_requests", model=COLD) == 0
    pod = cluster.list("v1/pods", NAMESPACE, labels={"tinyimg.io/model": COLD})[0]
    waited = (router_metric(cluster, "tinyimg_router_cold_start_duration_seconds_sum", model=COLD)
              / router_metric(cluster, "tinyimg_router_cold_start_duration_seconds_count", model=COLD))
    marks = {"decision": ups[0]["time"], "pod created": pod["metadata"].get("creationTimestamp"),
             "pod ready": condition(pod, "Ready").get("lastTransitionTime")}
    parts = ", ".join(f"{k} +{from_time(v) - wall:.1f}s" for k, v in marks.items() if from_time(v))
    print(f"\nBENCH cold start: 10 concurrent first requests, all 200; last image {first_image:.1f}s after the "
          f"requests; held {waited:.1f}s on average; {parts} (API times have 1 s resolution)")
    cluster.wait_until(lambda: replicas(cluster, COLD) == 0, timeout=30, what="back to zero after the idle time")
    assert [h["reason"] for h in history(cluster, COLD)][-1] == "ScaleToZero"


def test_cold_start_timeout_is_503_with_retry_after_and_a_leaving_client_frees_its_slot(autoscaled, tmp_path):
    cluster = autoscaled
    apply_model(cluster, tmp_path, NEVER, tmp_path / "does-not-exist", replicas=0, autoscaling={
        "enabled": True, "minReplicas": 0, "maxReplicas": 1, "coldStartTimeoutSeconds": 3})
    url = cluster.service_url(NAMESPACE, "tinyimg-router")
    cluster.wait_until(lambda: NEVER in {m["name"] for m in httpx.get(f"{url}/models", timeout=10).json()["models"]},
                       timeout=30, what="the router lists the model")
    with pytest.raises(httpx.ReadTimeout):
        post(url, {**SLOW, "model": NEVER}, timeout=1)
    cluster.wait_until(lambda: router_metric(cluster, "tinyimg_router_held_requests_total", model=NEVER, outcome="disconnected") == 1,
                       timeout=10, what="the router saw the client leave")
    started = time.monotonic()
    resp = post(url, {**SLOW, "model": NEVER})
    waited = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "cold_start_timeout" and float(resp.headers["Retry-After"]) > 0
    assert 3 <= waited < 10, waited
    assert router_metric(cluster, "tinyimg_router_waiting_requests", model=NEVER) == 0
    # The pod it asked for never gets ready: blind, the autoscaler holds it (never to zero blind).
    model = cluster.wait_until(lambda: (m := cluster.get(IMAGEMODELS, NAMESPACE, NEVER))
                               and (m["status"].get("autoscaling") or {}).get("reason") == "SignalUnavailable" and m,
                               timeout=30, what="the autoscaler says it is blind")
    assert model["status"]["autoscaling"]["desiredReplicas"] == 1
    cluster.kubectl("-n", NAMESPACE, "delete", "imagemodel", NEVER)


@pytest.mark.parametrize(("account", "grant"), [
    ("tinyimg-operator", ("", "pods", "list")),
    ("tinyimg-router", ("tinyimg.io", "imagemodels", "patch")),
], ids=["operator-lists-pods", "router-patches-imagemodels"])
def test_the_autoscaling_grants_are_used_and_allowed(autoscaled, account, grant):
    granted, needs = account_grants_and_needs(autoscaled, account)
    # kopf's namespace observer lists namespaces at every start (the restart above makes one late
    # enough to be recorded); in a cluster that is a 403, after which kopf keeps to --namespace.
    refused = sorted({need for need in needs if not rbac.allows(granted, need) and need.resource != "namespaces"}, key=str)
    assert refused == [], f"{account} made requests its Roles do not allow (403 in a cluster): {refused}"
    assert any((n.group, n.resource, n.verb) == grant for n in needs), f"{account} never used {grant}"
