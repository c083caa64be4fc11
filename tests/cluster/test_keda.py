"""`autoscaling.controller: keda` on the emulated cluster: a model at zero wakes on a request.

KEDA itself cannot run here (it is an operator with its own images); what it does is evaluate its
ScaledObject's Prometheus query and write the scale subresource. So: the chart's own ScaledObject
(rendered by real helm for the same model), its query evaluated by a real Prometheus that scrapes
the pods as the chart's PodMonitor selects them, and `kubectl scale` for what KEDA would apply.
Before issue 17 the query read pod metrics only (0 with 0 pods, so a model at zero never woke),
and the router held every request for the cold-start timeout, then 503."""

from __future__ import annotations

import math
import shutil
import threading

import httpx
import pytest
import yaml

from tests.cluster import monitoring
from tests.cluster.conftest import IMAGEMODELS, NAMESPACE, RELEASE, imagemodel_manifest, install_chart, model_pods
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

MODEL = "woken"
AUTOSCALING = {"enabled": True, "minReplicas": 0, "maxReplicas": 2, "targetQueuePerReplica": 2,
               "coldStartTimeoutSeconds": 120}


@pytest.fixture(scope="module")
def keda_installed(cluster, tiny_model_dirs, tmp_path_factory):
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (Debian package `prometheus`; .ci/run installs it)")
    install_chart(cluster, "--set", "autoscaling.controller=keda")
    manifest = tmp_path_factory.mktemp("keda") / "model.yaml"
    manifest.write_text(imagemodel_manifest("flux", tiny_model_dirs["flux"], name=MODEL, replicas=0, autoscaling=AUTOSCALING))
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest))
    cluster.wait_until(lambda: (d := cluster.get("apps/v1/deployments", NAMESPACE, MODEL)) and d["spec"]["replicas"] == 0,
                       timeout=60, what="the model's Deployment at 0 replicas")
    return cluster, yaml.safe_load(manifest.read_text())["spec"]


def rendered(cluster, spec: dict, template: str) -> dict:
    """One object of the chart, rendered by real helm with the model in `models` (KEDA's ScaledObject
    exists only for those), as installed otherwise."""
    values = {"autoscaling": {"controller": "keda"}, "monitoring": {"podMonitor": {"enabled": True}},
              "models": [{"name": MODEL, **spec}]}
    return yaml.safe_load(cluster.helm("template", RELEASE, "charts/tinyimg", "-n", NAMESPACE, "-f", "-",
                                       "--show-only", template, stdin=yaml.safe_dump(values)).stdout)


def test_a_held_request_is_what_wakes_a_model_at_zero_under_keda(keda_installed, tmp_path):
    cluster, spec = keda_installed
    scaled = rendered(cluster, spec, "templates/autoscalers.yaml")
    [trigger] = scaled["spec"]["triggers"]
    query, threshold = trigger["metadata"]["query"], float(trigger["metadata"]["threshold"])
    pod_monitor = rendered(cluster, spec, "templates/podmonitor.yaml")
    config = monitoring.scrape_config(pod_monitor, cluster.list("v1/pods", NAMESPACE))
    assert len(config["scrape_configs"][0]["static_configs"]) == 2  # the two router pods; the model has none
    url = cluster.service_url(NAMESPACE, f"{RELEASE}-router")
    answers: list[int | str] = []

    def first_request() -> None:
        try:
            answers.append(httpx.post(f"{url}/generate", json={"model": MODEL, "prompt": "a kite", "steps": 2},
                                      timeout=180).status_code)
        except httpx.HTTPError as err:
            answers.append(repr(err))

    address = cluster.call(lambda: cluster.kubelet.pool.take([9090]))
    as_pod = cluster.identity("prometheus-keda", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    with monitoring.running_prometheus(config, tmp_path, address, as_pod) as prom:
        waiter = threading.Thread(target=first_request)
        waiter.start()

        def metric() -> float:
            result = monitoring.query(prom, query)
            return float(result[0]["value"][1]) if result else 0.0

        # What KEDA sees: the request the router holds (no pod exports anything at zero).
        seen = cluster.wait_until(lambda: metric() >= 1 and metric(), timeout=60, what="KEDA's query sees the held request")
        # KEDA activates above 0 and asks for ceil(metric / threshold) replicas, within its bounds.
        replicas = max(1, min(scaled["spec"]["maxReplicaCount"], math.ceil(seen / threshold)))
        assert replicas == 1
        cluster.kubectl("-n", NAMESPACE, "scale", f"imagemodel/{MODEL}", f"--replicas={replicas}")
        waiter.join(180)
    assert answers == [200], answers
    assert len(model_pods(cluster, MODEL)) == 1
    # The router wrote no demand annotation: under KEDA its Role has no patch, and none is needed.
    annotations = cluster.get(IMAGEMODELS, NAMESPACE, MODEL)["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.endswith("/demand")], annotations
