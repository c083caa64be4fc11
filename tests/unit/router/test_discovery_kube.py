import pytest

from tests.support.imagemodels import build_imagemodel
from tinyimg.router.discovery_kube import (
    apply_event,
    build_desired_table,
    build_model_status,
    find_owning_model,
)
from tinyimg.router.table import BackendRef


def ref(kind, name, uid, controller=True):
    return {"apiVersion": "x", "kind": kind, "name": name, "uid": uid, "controller": controller}


def pod(name="p1", model="m", ip="10.0.0.1", ready=True, terminating=False, ports=None, owner="default"):
    meta = {"name": name, "labels": {"tinyimg.io/model": model} if model else {}}
    if owner == "default":
        owner = ref("ReplicaSet", f"{model}-abc", f"uid-rs-{model}")
    if owner is not None:
        meta["ownerReferences"] = [owner]
    if terminating:
        meta["deletionTimestamp"] = "2026-11-27T12:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "server", "ports": ports if ports is not None else [{"name": "http", "containerPort": 8000}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def imagemodel(name="m", family="sdxl", conditions=()):
    return build_imagemodel(name, family=family, uid=f"uid-im-{name}", status={"conditions": list(conditions)})


def deployment(model="m", managed_by="tinyimg-operator", owner_uid=None, uid=None):
    return {
        "metadata": {
            "name": model, "uid": uid or f"uid-dep-{model}",
            "labels": {"tinyimg.io/model": model, "app.kubernetes.io/managed-by": managed_by},
            "ownerReferences": [ref("ImageModel", model, owner_uid or f"uid-im-{model}")],
        }
    }


def replicaset(model="m", deployment_uid=None):
    return {
        "metadata": {
            "name": f"{model}-abc", "uid": f"uid-rs-{model}", "labels": {"tinyimg.io/model": model},
            "ownerReferences": [ref("Deployment", model, deployment_uid or f"uid-dep-{model}")],
        }
    }


def chain(*models):
    """ImageModels, operator Deployments and ReplicaSets for ``models``, keyed by name."""
    return (
        {m: imagemodel(m) for m in models},
        {m: deployment(m) for m in models},
        {f"{m}-abc": replicaset(m) for m in models},
    )


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


OWNERSHIP = [
    ("through the ReplicaSet", lambda im, dep, rs: (pod(), im, dep, rs), "m"),
    ("owned by the Deployment directly", lambda im, dep, rs: (pod(owner=ref("Deployment", "m", "uid-dep-m")), im, dep, {}), "m"),
    ("no owner: a bare pod with the label", lambda im, dep, rs: (pod(owner=None), im, dep, rs), None),
    ("owner reference not marked controller", lambda im, dep, rs: (pod(owner=ref("ReplicaSet", "m-abc", "uid-rs-m", controller=False)), im, dep, rs), None),
    ("made-up ReplicaSet uid", lambda im, dep, rs: (pod(owner=ref("ReplicaSet", "m-abc", "forged")), im, dep, rs), None),
    ("right uid, wrong name", lambda im, dep, rs: (pod(owner=ref("ReplicaSet", "other", "uid-rs-m")), im, dep, rs), None),
    ("ReplicaSet of another Deployment", lambda im, dep, rs: (pod(), im, dep, {"m-abc": replicaset(deployment_uid="uid-dep-other")}), None),
    ("Deployment not made by the operator", lambda im, dep, rs: (pod(), im, {"m": deployment(managed_by="someone")}, rs), None),
    ("Deployment owned by a deleted ImageModel", lambda im, dep, rs: (pod(), im, {"m": deployment(owner_uid="uid-im-old")}, rs), None),
    ("ImageModel gone", lambda im, dep, rs: (pod(), {}, dep, rs), None),
    ("pod labelled for another model", lambda im, dep, rs: ({**pod(), "metadata": {**pod()["metadata"], "labels": {"tinyimg.io/model": "x"}}}, {**im, "x": imagemodel("x")}, dep, rs), None),
    ("pod owned by a ReplicaSet but claims to be the Deployment's", lambda im, dep, rs: (pod(owner=ref("Deployment", "m", "uid-dep-m")), im, {}, rs), None),
]


@pytest.mark.parametrize(("build", "expected"), [x[1:] for x in OWNERSHIP], ids=[x[0] for x in OWNERSHIP])
def test_find_owning_model_follows_the_owner_chain_to_an_existing_imagemodel(build, expected):
    the_pod, imagemodels, deployments, replicasets = build(*chain("m"))
    assert find_owning_model(the_pod, imagemodels, deployments, replicasets) == expected


def test_build_desired_table_groups_owned_pods_by_model_and_keeps_models_without_pods():
    pods = {
        "a-1": pod("a-1", "a", "10.0.0.1"),
        "a-2": pod("a-2", "a", "10.0.0.2", ready=False),
        "orphan": pod("orphan", "gone", "10.0.0.3"),
        "pending": pod("pending", "a", None),
        "impostor": pod("impostor", "a", "10.0.0.66", owner=None),
    }
    imagemodels, deployments, replicasets = chain("a", "b")
    imagemodels["b"]["spec"]["family"] = "flux"
    desired = build_desired_table(imagemodels, pods, deployments, replicasets)
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
    assert objects["p1"]["status"]["conditions"][0]["status"] == "False"
    apply_event(objects, "DELETED", pod("p1"))
    apply_event(objects, "DELETED", pod("p1"))  # a repeated delete is harmless
    assert objects == {}


def test_a_canary_rollout_gives_the_weights_and_each_pod_its_revision():
    imagemodels, deployments, replicasets = chain("m")
    imagemodels["m"]["status"]["revisions"] = [
        {"name": "old", "phase": "stable", "weight": 90}, {"name": "new", "phase": "canary", "weight": 10},
        {"name": "bad", "phase": "rolled-back", "weight": 0}]
    stable, canary = pod("m-1", "m", "10.0.0.1"), pod("m-2", "m", "10.0.0.2")
    stable["metadata"]["labels"]["tinyimg.io/revision"] = "old"
    canary["metadata"]["labels"]["tinyimg.io/revision"] = "new"
    desired = build_desired_table(imagemodels, {"m-1": stable, "m-2": canary}, deployments, replicasets)
    assert desired["m"].weights == (("new", 10), ("old", 90))
    assert [(b.name, b.revision) for b in desired["m"].backends] == [("m-1", "old"), ("m-2", "new")]
    imagemodels["m"]["status"]["revisions"] = [{"name": "new", "phase": "stable", "weight": 100}]
    assert build_desired_table(imagemodels, {}, deployments, replicasets)["m"].weights == ()  # one revision: no split
