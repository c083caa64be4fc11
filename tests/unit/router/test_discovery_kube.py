import pytest

from tinyimg.router.discovery_kube import (
    apply_event,
    build_desired_table,
    build_model_status,
    build_pod_url,
    is_pod_ready,
)
from tinyimg.router.table import BackendRef


def pod(name="p1", model="m", ip="10.0.0.1", ready=True, terminating=False, ports=None):
    meta = {"name": name, "labels": {"tinyimg.io/model": model} if model else {}}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-27T12:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "server", "ports": ports if ports is not None else [{"name": "http", "containerPort": 8000}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def imagemodel(name="m", family="sdxl", conditions=()):
    return {"metadata": {"name": name}, "spec": {"family": family}, "status": {"conditions": list(conditions)}}


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


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ((), ("sdxl", "loading", None)),
        (({"type": "Ready", "status": "True"},), ("sdxl", "loading", None)),
        (({"type": "Degraded", "status": "True", "message": "image pull failed"},), ("sdxl", "failed", "image pull failed")),
    ],
    ids=["new", "ready-condition-alone-waits-for-a-pod", "degraded"],
)
def test_build_model_status(conditions, expected):
    assert build_model_status(imagemodel(conditions=conditions)) == expected


def test_build_desired_table_groups_pods_by_model_label_and_keeps_models_without_pods():
    pods = {
        "a-1": pod("a-1", "a", "10.0.0.1"),
        "a-2": pod("a-2", "a", "10.0.0.2", ready=False),
        "orphan": pod("orphan", "gone", "10.0.0.3"),
        "pending": pod("pending", "a", None),
    }
    desired = build_desired_table({"a": imagemodel("a"), "b": imagemodel("b", "flux")}, pods)
    assert sorted(desired) == ["a", "b"]
    assert desired["a"].backends == (
        BackendRef("http://10.0.0.1:8000", "a-1", True),
        BackendRef("http://10.0.0.2:8000", "a-2", False),
    )
    assert (desired["b"].family, desired["b"].backends) == ("flux", ())


def test_apply_event_adds_modifies_and_deletes():
    objects = {}
    apply_event(objects, "ADDED", pod("p1"))
    apply_event(objects, "MODIFIED", pod("p1", ready=False))
    assert is_pod_ready(objects["p1"]) is False
    apply_event(objects, "DELETED", pod("p1"))
    apply_event(objects, "DELETED", pod("p1"))  # a repeated delete is harmless
    assert objects == {}
