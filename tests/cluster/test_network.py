"""What a real install hits on day one, on the emulated cluster with NetworkPolicies enforced the
way a CNI does (tests/support/cluster/network.py): the chart installed as the docs say (plus a
webhook allow-list), one model, probe pods with different identities asking to reach it, a
1024² img2img and inpaint request through the router, and a job's signed webhook.

The pure translation is tested first (no root needed); the cluster part needs root, nft and
cgroup v2 (CI has them) and skips elsewhere, saying why."""

from __future__ import annotations

import base64
import io
import json
import os

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.cluster.conftest import NAMESPACE, RELEASE, imagemodel_manifest, install_chart, model_pods
from tests.support.cluster.network import Identity, ServiceRule, admitted, build_ruleset, enforcement_unavailable
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)
from tests.support.webhooks import running_receiver, verify
from tinyimg.runtime.webhooks import read_webhook_secret

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


def test_the_ruleset_admits_by_cgroup_drops_other_pods_and_dnats_services():
    model = ident("a", ip="127.9.9.5", cgroup="c/model", role="model")
    pods = [ident("a", cgroup="c/router", role="router"), ident("a", cgroup="c/other", role="other"), model]
    services = [ServiceRule("127.9.9.100", 8000, (("127.9.9.5", 8000), ("127.9.9.6", 8000))), ServiceRule("127.9.9.101", 8000, ())]
    text = build_ruleset("t", "c", 1, pods, [POLICY], {"a": {}}, services)
    assert 'ip daddr 127.9.9.5 tcp dport { 8000 } socket cgroupv2 level 2 "c/router" accept' in text
    assert 'ip daddr 127.9.9.5 socket cgroupv2 level 1 "c" counter drop' in text
    assert '"c/other"' not in text  # no rule names it: the drop takes it
    assert "dnat to numgen inc mod 2 map { 0 : 127.9.9.5 . 8000, 1 : 127.9.9.6 . 8000 }" in text
    assert "ip daddr 127.9.9.101 tcp dport 8000 reject with tcp reset" in text
    assert text.startswith("table ip t\ndelete table ip t\n")  # one transaction replaces the last


needs_enforcement = pytest.mark.skipif(
    bool(enforcement_unavailable()) and not os.environ.get("CI"),
    reason=f"NetworkPolicies cannot be enforced here: {enforcement_unavailable()}")


@pytest.fixture(scope="module")
def installed(cluster, tiny_model_dirs, tmp_path_factory):
    assert cluster.network is not None, f"CI must enforce NetworkPolicies: {enforcement_unavailable()}"
    # Webhooks may go to this machine's receiver (the tests' own, on loopback).
    install_chart(cluster, "--set", "server.jobs.webhookAllowedHosts={127.0.0.1}")
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


def photo_like_png(size: int = 1024) -> bytes:
    """Gradients with sensor-like noise: compresses like a photo (about 2 MB at 1024²)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([(x / 4) % 256, (y / 4) % 256, ((x + y) / 8) % 256], -1) + rng.normal(0, 6, (size, size, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


@needs_enforcement
def test_a_1024_photo_img2img_and_inpaint_pass_the_router_and_the_pod_by_default(installed):
    """Was 413 through `helm install`: both services capped bodies at 1 MB."""
    url = installed.service_url(NAMESPACE, f"{RELEASE}-router")
    image = base64.b64encode(photo_like_png()).decode()
    mask_png = io.BytesIO()
    mask = Image.new("L", (1024, 1024), 0)
    mask.paste(255, (256, 256, 768, 768))
    mask.save(mask_png, "PNG")
    common = {"model": MODEL, "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "image": image}
    for body in ({**common, "strength": 0.6}, {**common, "mask": base64.b64encode(mask_png.getvalue()).decode()}):
        assert len(json.dumps(body)) > 2_500_000  # what a user sends: well over the old 1 MB bound
        resp = httpx.post(f"{url}/generate", json=body, headers={"Accept": "image/png"}, timeout=120)
        assert resp.status_code == 200, resp.text[:300]
        assert Image.open(io.BytesIO(resp.content)).size == (64, 64)


@needs_enforcement
def test_a_job_webhook_through_the_router_reaches_its_receiver_signed_with_the_charts_key(installed, tmp_path):
    """Was 422 in a cluster: pods had no webhook allow-list nor key."""
    cluster = installed
    url = cluster.service_url(NAMESPACE, f"{RELEASE}-router")
    [secret] = [s for s in cluster.list("v1/secrets", NAMESPACE) if s["metadata"]["name"].endswith("-webhook")]
    (tmp_path / "key").write_bytes(base64.b64decode(secret["data"]["secret"]))
    key = read_webhook_secret(str(tmp_path / "key"))
    with running_receiver() as (hooks, hook_url):
        created = httpx.post(f"{url}/v1/jobs", json={"model": MODEL, "prompt": "a kite", "steps": 2, "webhook": hook_url},
                             timeout=60)
        assert created.status_code == 202, created.text
        hooks.wait_for_calls(1, timeout=60)
    (_, headers, body), = hooks.calls
    assert verify(headers, body, key)
    payload = json.loads(body)
    assert payload["id"] == created.json()["id"] and payload["status"] == "succeeded"
    assert payload["status_url"].startswith(url)  # the router's URL, not the pod's
