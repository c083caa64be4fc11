"""The process kubelet on its own, with small Python processes as containers (seconds, no models)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.cluster.conftest import condition
from tests.support.cluster.harness import Cluster, running_cluster

NS = "default"
# A container that serves its env and its mounted files on the pod's port and ignores SIGTERM
# when told to (so the grace period has to end in SIGKILL).
SERVER = r'''
import http.server, json, os, pathlib, signal, sys
if os.environ.get("IGNORE_TERM"): signal.signal(signal.SIGTERM, signal.SIG_IGN)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        files = {str(p): p.read_text() for d in ("CM_DIR", "SECRET_DIR") for p in pathlib.Path(os.environ[d]).rglob("*") if p.is_file()}
        body = json.dumps({"env": dict(os.environ), "files": files, "argv": sys.argv}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[1], 8000), H).serve_forever()
'''


def deployment(name: str, replicas: int = 1, command: list[str] | None = None, **extra) -> dict:
    container = {
        "name": "c", "image": "example/anything:1",
        "command": command or ["python", "-c", SERVER, "0.0.0.0"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
        "env": [
            {"name": "CM_DIR", "value": "/data/cm"},
            {"name": "SECRET_DIR", "value": "/data/s"},
            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "greeting"}}},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "URL", "value": "http://$(MY_IP):8000"},
            *extra.pop("env", []),
        ],
        "volumeMounts": [{"name": "cm", "mountPath": "/data/cm"}, {"name": "s", "mountPath": "/data/s"},
                         {"name": "scratch", "mountPath": "/data/scratch"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": extra.pop("grace", 2), "containers": [container],
                     "volumes": [{"name": "cm", "configMap": {"name": "cm"}}, {"name": "s", "secret": {"secretName": "s"}},
                                 {"name": "scratch", "emptyDir": {}}]},
        }, **extra},
    }


CONFIG = [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": NS},
     "data": {"greeting": "hello", "listen.conf": "bind 0.0.0.0"}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NS}, "stringData": {"token": "t0k"},
     "data": {"token": "dDBr"}},
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    with running_cluster(tmp_path_factory.mktemp("kubelet")) as running:
        for obj in CONFIG:
            running.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        yield running


def apply(cluster: Cluster, obj: dict) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj))


def ready_pods(cluster: Cluster, app: str) -> list[dict]:
    return [p for p in cluster.list("v1/pods", NS, labels={"app": app})
            if condition(p, "Ready").get("status") == "True" and not p["metadata"].get("deletionTimestamp")]


def test_pod_gets_owner_chain_address_env_volumes_and_credentials(cluster):
    apply(cluster, deployment("web"))
    pod = cluster.wait_until(lambda: ready_pods(cluster, "web"), timeout=30)[0]
    rs_ref = pod["metadata"]["ownerReferences"][0]
    rs = cluster.get("apps/v1/replicasets", NS, rs_ref["name"])
    assert rs_ref["kind"] == "ReplicaSet" and rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and not ip.startswith("127.0.0.")
    seen = httpx.get(f"http://{ip}:8000/", timeout=5).json()
    env, files = seen["env"], seen["files"]
    assert (env["MY_IP"], env["MY_NAME"], env["MY_NS"]) == (ip, pod["metadata"]["name"], NS)
    assert (env["FROM_CM"], env["FROM_SECRET"], env["URL"]) == ("hello", "t0k", f"http://{ip}:8000")
    assert seen["argv"][-1] == ip  # 0.0.0.0 in args is the pod's address
    cm, secret = env["CM_DIR"], env["SECRET_DIR"]  # mount paths mapped under the pod's directory
    assert cm.endswith("/root/data/cm") and files[f"{cm}/listen.conf"] == f"bind {ip}"
    assert secret.endswith("/root/data/s") and files[f"{secret}/token"] == "t0k"
    kubeconfig = (cluster.workdir / "node" / "pods").glob(f"*{pod['metadata']['name']}*/kubeconfig")
    assert "emulated-" in next(kubeconfig).read_text()  # a token the emulator maps to the pod's ServiceAccount
    # The Deployment controller's next pass counts the pod that just turned ready.
    deployment_status = cluster.wait_until(lambda: (s := cluster.get("apps/v1/deployments", NS, "web")["status"])
                                           .get("readyReplicas") and s, timeout=10)
    assert {k: deployment_status[k] for k in ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas")} == dict.fromkeys(
        ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas"), 1)
    apply(cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 8000, "targetPort": "http"}]}})
    endpoints = cluster.wait_until(lambda: (s := cluster.get("discovery.k8s.io/v1/endpointslices", NS, "web-emulated"))
                                   and s["endpoints"], timeout=10)
    assert [(e["addresses"], e["conditions"]["ready"]) for e in endpoints] == [([ip], True)]
    through_service = httpx.get(cluster.service_url(NS, "web") + "/", timeout=5).json()
    assert through_service["env"]["MY_IP"] == ip


def test_crashed_container_restarts_with_back_off_and_restart_count(cluster):
    apply(cluster, deployment("crash", command=["python", "-c", "import time; time.sleep(0.3); raise SystemExit(3)"]))
    pod = cluster.wait_until(
        lambda: (p := cluster.list("v1/pods", NS, labels={"app": "crash"}))
        and p[0]["status"].get("containerStatuses", [{}])[0].get("restartCount", 0) >= 2 and p[0], timeout=30)
    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 3 and condition(pod, "Ready")["status"] == "False"
    assert "message" not in status["lastState"]["terminated"]  # policy File (default): nothing written, no message
    cluster.kubectl("delete", "deployment", "crash")


def test_fallback_to_logs_on_error_puts_the_log_tail_in_the_termination_message(cluster):
    script = "import sys; print('loading'); print('model source /m/gone not found', file=sys.stderr); sys.exit(2)"
    obj = deployment("crashlog", command=["python", "-c", script])
    obj["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    apply(cluster, obj)
    pod = cluster.wait_until(
        lambda: (p := cluster.list("v1/pods", NS, labels={"app": "crashlog"}))
        and p[0]["status"].get("containerStatuses", [{}])[0].get("restartCount", 0) >= 2 and p[0], timeout=30)
    terminated = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    # This run's output only (not the kubelet's start line, not the earlier runs'), as a kubelet gives it.
    assert (terminated["exitCode"], terminated["reason"]) == (2, "Error")
    assert terminated["message"] == "loading\nmodel source /m/gone not found", terminated
    cluster.kubectl("delete", "deployment", "crashlog")


def test_template_that_cannot_run_fails_the_pod_with_a_message(cluster):
    apply(cluster, deployment("bad", command=["/usr/bin/whatever"]))
    pod = cluster.wait_until(lambda: (p := cluster.list("v1/pods", NS, labels={"app": "bad"}))
                             and p[0]["status"].get("phase") == "Failed" and p[0], timeout=30)
    assert "whatever" in pod["status"]["message"]
    cluster.kubectl("delete", "deployment", "bad")


def test_scale_and_rolling_update_honour_max_surge_and_unavailable(cluster):
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    apply(cluster, deployment("roll", replicas=1, strategy=strategy))
    cluster.kubectl("scale", "deployment/roll", "--replicas=3")
    cluster.wait_until(lambda: len(ready_pods(cluster, "roll")) == 3, timeout=30)
    old = {p["metadata"]["name"] for p in ready_pods(cluster, "roll")}
    apply(cluster, deployment("roll", replicas=3, strategy=strategy, env=[{"name": "V", "value": "2"}]))
    counts, ready = [], []

    def done() -> bool:
        pods = [p for p in cluster.list("v1/pods", NS, labels={"app": "roll"}) if not p["metadata"].get("deletionTimestamp")]
        counts.append(len(pods))
        ready.append(len([p for p in pods if condition(p, "Ready").get("status") == "True"]))
        names = {p["metadata"]["name"] for p in ready_pods(cluster, "roll")}
        return len(names) == 3 and not names & old and len(pods) == 3
    cluster.wait_until(done, timeout=60, interval=0.05)
    assert max(counts) <= 4 and min(ready) >= 3
    cluster.kubectl("scale", "deployment/roll", "--replicas=1")
    cluster.wait_until(lambda: len(cluster.list("v1/pods", NS, labels={"app": "roll"})) == 1, timeout=30)


def test_deletion_sends_sigterm_then_sigkill_after_the_grace_period(cluster):
    apply(cluster, deployment("stubborn", grace=1, env=[{"name": "IGNORE_TERM", "value": "1"}]))
    pod = cluster.wait_until(lambda: ready_pods(cluster, "stubborn"), timeout=30)[0]
    before = set(cluster.pod_processes())
    started = time.monotonic()
    cluster.kubectl("delete", "deployment", "stubborn")
    cluster.wait_until(lambda: cluster.get("v1/pods", NS, pod["metadata"]["name"]) is None, timeout=30)
    assert time.monotonic() - started >= 1.0  # it ignored SIGTERM for the whole grace period
    assert len(set(cluster.pod_processes()) & before) == len(before) - 1
