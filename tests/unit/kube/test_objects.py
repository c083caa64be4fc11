"""Pure readings of pods and owner references, shared by the router's discovery and the operator."""

import pytest

from tinyimg.kube.objects import build_pod_url, controller_of, is_pod_ready


def ref(kind, name, uid, controller=True):
    return {"apiVersion": "x", "kind": kind, "name": name, "uid": uid, "controller": controller}


def pod(ip="10.0.0.1", ready=True, terminating=False, ports=None):
    meta = {"name": "p1", **({"deletionTimestamp": "2026-11-27T12:00:00Z"} if terminating else {})}
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "server", "ports": ports if ports is not None else [{"name": "http", "containerPort": 8000}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod(), True),
        (pod(ready=False), False),
        (pod(terminating=True), False),
        (pod(ip=None), False),
        ({"metadata": {"name": "x"}, "status": {"podIP": "10.0.0.1"}}, False),
    ],
    ids=["ready", "not-ready", "terminating", "no-ip", "no-conditions"],
)
def test_is_pod_ready(obj, expected):
    assert is_pod_ready(obj) is expected


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod(ports=[{"name": "metrics", "containerPort": 9000}, {"name": "http", "containerPort": 8080}]), "http://10.0.0.1:8080"),
        (pod(ports=[{"containerPort": 9000}]), "http://10.0.0.1:9000"),
        (pod(ports=[]), "http://10.0.0.1:8000"),
        (pod(ip="fd00::5"), "http://[fd00::5]:8000"),
        (pod(ip=None), None),
    ],
    ids=["named-http-port", "first-port", "default-port", "ipv6", "no-ip"],
)
def test_build_pod_url(obj, expected):
    assert build_pod_url(obj) == expected



def test_controller_of_picks_the_controller_reference():
    obj = {"metadata": {"ownerReferences": [ref("A", "a", "1", controller=False), ref("B", "b", "2")]}}
    assert controller_of(obj)["kind"] == "B"
    assert controller_of({"metadata": {}}) is None
