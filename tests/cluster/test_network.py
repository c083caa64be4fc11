"""NetworkPolicies enforced the way a CNI does (tests/support/cluster/network.py): the chart's
default install, a model pod, and probe pods with different identities asking to reach it.

The pure translation is tested first (no root needed); the cluster part needs root, nft and
cgroup v2 (CI has them) and skips elsewhere, saying why."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from tests.cluster.conftest import NAMESPACE, RELEASE, imagemodel_manifest, install_chart, model_pods
from tests.support.cluster.network import Identity, admitted, enforcement_unavailable
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

MODEL = "tiny-flux"
# A probe pod: GET /?url=U tries U from inside the pod and says what happened.
PROBE = r'''
import http.server, json, sys, urllib.parse, urllib.request
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("url", [""])[0]
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                out = {"reached": True, "status": r.status}
        except urllib.error.HTTPError as e:
            out = {"reached": True, "status": e.code}
        except Exception as e:
            out = {"reached": False, "error": repr(e)}
        body = json.dumps(out).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[1], 8000), H).serve_forever()
'''
SELECTOR = {"app.kubernetes.io/name": "tinyimg", "app.kubernetes.io/instance": RELEASE}


def ident(ns: str, ip: str = "", cgroup: str = "", **labels: str) -> Identity:
    return Identity(ns, tuple(sorted(labels.items())), ip, cgroup, (("http", 8000),))


POLICY = {"metadata": {"name": "p", "namespace": "a"}, "spec": {
    "podSelector": {"matchLabels": {"role": "model"}}, "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "router"}}},
                          {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}],
                 "ports": [{"port": "http"}]}]}}


@pytest.mark.parametrize(("target", "expected"), [
    pytest.param(ident("a", role="router"), (False, []), id="a-pod-no-policy-selects-is-not-isolated"),
    pytest.param(ident("b", role="model"), (False, []), id="a-policy-selects-only-in-its-own-namespace"),
    pytest.param(ident("a", role="model"), (True, ["router@a", "prom@mon"]), id="router-in-namespace-and-anything-in-mon"),
])
def test_admitted_follows_the_policy_selectors(target, expected):
    pods = [ident("a", cgroup="router@a", role="router"), ident("b", cgroup="router@b", role="router"),
            ident("mon", cgroup="prom@mon", app="prometheus"), ident("a", cgroup="other@a", role="other"), target]
    namespaces = {n: {"kubernetes.io/metadata.name": n} for n in ("a", "b", "mon")}
    isolated, grants = admitted(target, pods, [POLICY], namespaces)
    assert (isolated, [g.cgroup for g, ports in grants if g]) == expected
    assert all(ports == ["8000"] for _, ports in grants)  # the named port resolved on the target


needs_enforcement = pytest.mark.skipif(
    bool(enforcement_unavailable()) and not os.environ.get("CI"),
    reason=f"NetworkPolicies cannot be enforced here: {enforcement_unavailable()}")


@pytest.fixture(scope="module")
def installed(cluster, tiny_model_dirs, tmp_path_factory):
    assert cluster.network is not None, f"CI must enforce NetworkPolicies: {enforcement_unavailable()}"
    install_chart(cluster)
    manifest = tmp_path_factory.mktemp("net") / "model.yaml"
    manifest.write_text(imagemodel_manifest("flux", tiny_model_dirs["flux"], name=MODEL))
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest))
    cluster.wait_until(lambda: model_pods(cluster, MODEL), timeout=120, what="model pod ready")
    return cluster


def probe_pod(cluster, name: str, namespace: str, labels: dict[str, str]) -> str:
    """A probe Deployment's ready pod's URL."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"probe": name}}, "template": {
                      "metadata": {"labels": {**labels, "probe": name}},
                      "spec": {"containers": [{"name": "probe", "image": "example/probe:1",
                                               "command": ["python", "-c", PROBE, "0.0.0.0"],
                                               "ports": [{"name": "http", "containerPort": 8000}],
                                               "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}}}}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(deployment))

    def ready():
        pods = [p for p in cluster.list("v1/pods", namespace, labels={"probe": name})
                if any(c.get("type") == "Ready" and c.get("status") == "True" for c in (p.get("status") or {}).get("conditions") or [])]
        return pods and f"http://{pods[0]['status']['podIP']}:8000"
    return cluster.wait_until(ready, timeout=60, what=f"probe {namespace}/{name} ready")


def reaches(probe: str, url: str) -> bool:
    answer = httpx.get(probe, params={"url": url}, timeout=10).json()
    return answer["reached"] and answer["status"] == 200


@needs_enforcement
@pytest.mark.parametrize(("name", "namespace", "labels", "allowed"), [
    pytest.param("stranger", NAMESPACE, {"app": "stranger"}, False, id="unlabelled-pod-in-the-release-namespace-is-dropped"),
    pytest.param("fake-router", "elsewhere", {**SELECTOR, "app.kubernetes.io/component": "router"}, False,
                 id="router-labels-in-another-namespace-are-dropped"),
    pytest.param("operator-like", NAMESPACE, {**SELECTOR, "app.kubernetes.io/component": "operator"}, True,
                 id="operator-pod-for-the-builtin-autoscaler-is-admitted"),
    pytest.param("scraper", "monitoring", {"app": "prometheus"}, True, id="prometheus-namespace-is-admitted"),
])
def test_only_admitted_pods_reach_a_model_pod_directly_and_through_its_service(installed, name, namespace, labels, allowed):
    cluster = installed
    pod = model_pods(cluster, MODEL)[0]
    probe = probe_pod(cluster, name, namespace, labels)
    direct = f"http://{pod['status']['podIP']}:8000/health"
    service = f"{cluster.service_url(NAMESPACE, MODEL)}/health"
    assert (reaches(probe, direct), reaches(probe, service)) == (allowed, allowed)
    assert httpx.get(direct, timeout=10).status_code == 200  # the node itself (kubelet probes) always is


@needs_enforcement
def test_the_router_and_the_operator_reach_model_pods_under_the_default_policy(installed):
    cluster = installed
    url = cluster.service_url(NAMESPACE, f"{RELEASE}-router")
    resp = httpx.post(f"{url}/generate", json={"model": MODEL, "prompt": "a cat", "width": 32, "height": 32}, timeout=60)
    assert resp.status_code == 200, resp.text
    operator = cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "operator"})[0]
    probe = probe_pod(cluster, "as-operator", NAMESPACE, dict(operator["metadata"]["labels"]))
    assert reaches(probe, f"http://{model_pods(cluster, MODEL)[0]['status']['podIP']}:8000/status")
