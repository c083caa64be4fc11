"""The real operator against the emulated API: children, updates, repair, status, restarts."""

import asyncio

from .conftest import DEPLOYMENTS, IMAGEMODELS, NAMESPACE, SERVER_IMAGE, imagemodel


def children(kube, name):
    return (
        kube.get("v1/configmaps", NAMESPACE, f"{name}-config"),
        kube.get("v1/services", NAMESPACE, name),
        kube.get(DEPLOYMENTS, NAMESPACE, name),
    )


async def test_create_builds_configmap_deployment_and_service(kube, operator):
    created = await kube.create(imagemodel("sdxl", resources={"gpus": 2}, startupTimeoutSeconds=600))
    cm, svc, dep = await kube.wait_for(lambda: all(children(kube, "sdxl")) and children(kube, "sdxl"))
    uid = created["metadata"]["uid"]
    for obj in (cm, svc, dep):
        ref = obj["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("ImageModel", "sdxl", uid)
        assert obj["metadata"]["labels"]["tinyimg.io/model"] == "sdxl"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == SERVER_IMAGE
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 600
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert "model: sdxl" not in cm["data"]["config.yaml"] and "name: sdxl" in cm["data"]["config.yaml"]
    assert svc["spec"]["selector"]["tinyimg.io/model"] == "sdxl"


async def test_spec_change_updates_the_deployment(kube, operator):
    await kube.create(imagemodel("m", replicas=1))
    dep = await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m"))
    checksum = dep["spec"]["template"]["metadata"]["annotations"]["tinyimg.io/config-checksum"]
    await kube.patch(IMAGEMODELS, NAMESPACE, "m", {"spec": {"replicas": 3, "limits": {"maxSteps": 40}}})
    dep = await kube.wait_for(lambda: (d := kube.get(DEPLOYMENTS, NAMESPACE, "m"))["spec"]["replicas"] == 3 and d)
    assert dep["spec"]["template"]["metadata"]["annotations"]["tinyimg.io/config-checksum"] != checksum
    cm = kube.get("v1/configmaps", NAMESPACE, "m-config")
    assert "maxSteps: 40" in cm["data"]["config.yaml"]


async def test_removed_spec_field_is_removed_from_the_deployment(kube, operator):
    await kube.create(imagemodel("m", nodeSelector={"gpu": "a100"}))
    await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m"))
    await kube.patch(IMAGEMODELS, NAMESPACE, "m", {"spec": {"nodeSelector": None}})
    await kube.wait_for(lambda: "nodeSelector" not in kube.get(DEPLOYMENTS, NAMESPACE, "m")["spec"]["template"]["spec"])


async def test_deleted_child_is_recreated(kube, operator):
    await kube.create(imagemodel("m"))
    first = await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m"))
    await kube.delete(DEPLOYMENTS, NAMESPACE, "m")
    await kube.delete("v1/services", NAMESPACE, "m")
    again = await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m"))
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    await kube.wait_for(lambda: kube.get("v1/services", NAMESPACE, "m"))


async def test_edited_child_is_put_back(kube, operator):
    await kube.create(imagemodel("m"))
    await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m"))
    await kube.patch(DEPLOYMENTS, NAMESPACE, "m", {"spec": {"replicas": 7}})
    await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m")["spec"]["replicas"] == 1)


def condition(obj, kind):
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


async def test_ready_deployment_makes_the_imagemodel_ready(kube, operator):
    await kube.create(imagemodel("m", replicas=2))
    await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m"))
    model = await kube.wait_for(lambda: (m := kube.get(IMAGEMODELS, NAMESPACE, "m")) and condition(m, "Ready") and m)
    assert condition(model, "Ready")["status"] == "False"
    assert model["status"]["url"] == "http://m.models.svc.cluster.local:8000"
    await kube.patch_status(DEPLOYMENTS, NAMESPACE, "m", {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2})
    model = await kube.wait_for(
        lambda: (m := kube.get(IMAGEMODELS, NAMESPACE, "m")) and condition(m, "Ready").get("status") == "True" and m)
    assert (model["status"]["readyReplicas"], model["status"]["replicas"]) == (2, 2)
    assert model["status"]["observedGeneration"] == model["metadata"]["generation"]
    assert condition(model, "Progressing")["status"] == "False"


async def test_invalid_spec_is_degraded_with_an_event_and_no_children(kube, operator):
    await kube.create(imagemodel("bad", limits={"maxWidth": 99999}))
    model = await kube.wait_for(
        lambda: (m := kube.get(IMAGEMODELS, NAMESPACE, "bad")) and condition(m, "Degraded") and m)
    degraded = condition(model, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert "spec.limits.maxWidth" in degraded["message"]
    events = await kube.wait_for(lambda: [e for e in kube.list("v1/events", NAMESPACE) if e.get("reason") == "InvalidSpec"])
    assert "spec.limits.maxWidth" in events[0]["message"]
    await asyncio.sleep(0.3)
    assert children(kube, "bad") == (None, None, None)


async def test_restart_sends_no_duplicate_writes(kube, operator):
    await kube.create(imagemodel("m"))
    await kube.wait_for(lambda: all(children(kube, "m")))
    await kube.wait_for(lambda: condition(kube.get(IMAGEMODELS, NAMESPACE, "m"), "Ready"))
    await asyncio.sleep(0.5)  # let the echo events of our own writes settle
    await operator.stop()
    before = len(kube.writes())
    await operator.start()
    await asyncio.sleep(1.0)
    after = kube.writes()[before:]
    assert [(w.method, str(w.url.path)) for w in after] == []
