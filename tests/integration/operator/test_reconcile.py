"""The real operator against the emulated API: children, updates, repair, status, restarts."""

import json

from tests.support.otlp import recorded_spans  # noqa: F401  (the fixture)

from .conftest import DEPLOYMENTS, IMAGEMODELS, NAMESPACE, SERVER_IMAGE, imagemodel

HANDLED_ANNOTATION = "tinyimg.io/last-handled-configuration"


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
    pod = dep["spec"]["template"]["spec"]
    assert (pod["automountServiceAccountToken"], pod["terminationGracePeriodSeconds"]) == (False, 315)
    assert "lifecycle" not in c  # the server waits out the preStop window itself after SIGTERM
    assert svc["spec"]["selector"]["tinyimg.io/model"] == "sdxl"


async def test_spec_change_updates_the_deployment(kube, operator):
    await kube.create(imagemodel("m", replicas=1))
    dep = await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m"))
    checksum = dep["spec"]["template"]["metadata"]["annotations"]["tinyimg.io/config-checksum"]
    # A live setting: the ConfigMap changes, the pod template does not (the pods apply it themselves).
    await kube.patch(IMAGEMODELS, NAMESPACE, "m", {"spec": {"replicas": 3, "limits": {"maxSteps": 40}}})
    dep = await kube.wait_for(lambda: (d := kube.get(DEPLOYMENTS, NAMESPACE, "m"))["spec"]["replicas"] == 3 and d)
    await kube.wait_for(lambda: "maxSteps: 40" in kube.get("v1/configmaps", NAMESPACE, "m-config")["data"]["config.yaml"])
    assert dep["spec"]["template"]["metadata"]["annotations"]["tinyimg.io/config-checksum"] == checksum
    # New weights: the pods roll.
    await kube.patch(IMAGEMODELS, NAMESPACE, "m", {"spec": {"dtype": "float16"}})
    await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m")["spec"]["template"]["metadata"]["annotations"]
                        ["tinyimg.io/config-checksum"] != checksum)


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


def handled_spec(kube, name):
    """The spec kopf recorded as handled (its diff-base annotation, written once every handler of
    an event has finished, failed for good included): a sync point that proves processing ended."""
    model = kube.get(IMAGEMODELS, NAMESPACE, name) or {}
    recorded = (model.get("metadata", {}).get("annotations") or {}).get(HANDLED_ANNOTATION)
    return json.loads(recorded)["spec"] if recorded else None


async def test_invalid_spec_is_degraded_with_an_event_and_no_children(kube, operator):
    await kube.create(imagemodel("bad", limits={"maxWidth": 99999}))
    model = await kube.wait_for(
        lambda: (m := kube.get(IMAGEMODELS, NAMESPACE, "bad")) and condition(m, "Degraded") and m)
    degraded = condition(model, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert "spec.limits.maxWidth" in degraded["message"]
    events = await kube.wait_for(lambda: [e for e in kube.list("v1/events", NAMESPACE) if e.get("reason") == "InvalidSpec"])
    assert "spec.limits.maxWidth" in events[0]["message"]
    # Sync: a second invalid spec is handled to the end (kopf records it as handled, and the
    # status names the new field), so the first event's handling has long finished.
    await kube.patch(IMAGEMODELS, NAMESPACE, "bad", {"spec": {"limits": {"maxWidth": 2048, "maxSteps": 0}}})
    await kube.wait_for(lambda: (handled_spec(kube, "bad") or {}).get("limits", {}).get("maxSteps") == 0)
    await kube.wait_for(lambda: "spec.limits.maxSteps" in condition(kube.get(IMAGEMODELS, NAMESPACE, "bad"), "Degraded")["message"])
    assert children(kube, "bad") == (None, None, None)
    assert [w for w in kube.writes() if "/imagemodels/" not in w.path and "/events" not in w.path] == []


def kopf_said(caplog, since: int, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records[since:])


async def test_restart_sends_no_duplicate_writes(kube, operator, caplog):
    await kube.create(imagemodel("m"))
    await kube.wait_for(lambda: all(children(kube, "m")))
    await kube.wait_for(lambda: condition(kube.get(IMAGEMODELS, NAMESPACE, "m"), "Ready") and handled_spec(kube, "m"))
    await operator.stop()
    before, logged = len(kube.writes()), len(caplog.records)
    await operator.start()
    # Sync: the restarted operator has handled every object it found, its own handlers done
    # (kopf logs these after the handler returned): the model's resume handler and the child
    # handler of each of its three children, every one of which runs a full reconcile.
    await kube.wait_for(lambda: kopf_said(caplog, logged, "Resuming is processed: 1 succeeded") >= 1)
    await kube.wait_for(lambda: kopf_said(caplog, logged, "Handler 'child_changed' succeeded") >= 3)
    after = kube.writes()[before:]
    assert [(w.method, w.path) for w in after] == []


async def test_image_outside_the_allow_list_is_degraded_and_runs_nothing(kube, operator):
    await kube.create(imagemodel("evil", image="docker.io/attacker/miner:latest", env={"TOKEN": "x"}))
    model = await kube.wait_for(
        lambda: (m := kube.get(IMAGEMODELS, NAMESPACE, "evil")) and condition(m, "Degraded") and m)
    degraded = condition(model, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ImageNotAllowed")
    assert "docker.io/attacker/miner:latest" in degraded["message"] and SERVER_IMAGE in degraded["message"]
    events = await kube.wait_for(lambda: [e for e in kube.list("v1/events", NAMESPACE) if e.get("reason") == "ImageNotAllowed"])
    assert "spec.image" in events[0]["message"]
    await kube.wait_for(lambda: handled_spec(kube, "evil"))  # sync: kopf finished with the event
    assert children(kube, "evil") == (None, None, None)
    # The server image itself is always allowed: the same model then runs, env in the pod only.
    await kube.patch(IMAGEMODELS, NAMESPACE, "evil", {"spec": {"image": SERVER_IMAGE}})
    cm, _, dep = await kube.wait_for(lambda: all(children(kube, "evil")) and children(kube, "evil"))
    assert {"name": "TOKEN", "value": "x"} in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "TOKEN" not in cm["data"]["config.yaml"]


async def test_quantities_the_api_server_normalises_cause_no_patch(kube, operator):
    await kube.create(imagemodel("q", resources={"gpus": 1, "cpu": "0.5", "memory": "1024Mi"}))
    dep = await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "q"))
    # The creation is handled to the end, kopf's own bookkeeping patch included.
    await kube.wait_for(lambda: condition(kube.get(IMAGEMODELS, NAMESPACE, "q"), "Ready") and handled_spec(kube, "q"))
    # What a real API server stores: the same quantities in canonical form.
    containers = dep["spec"]["template"]["spec"]["containers"]
    containers[0]["resources"] = {"requests": {"cpu": "500m", "memory": "1Gi"},
                                  "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}}
    before = len(kube.writes())
    await kube.patch(DEPLOYMENTS, NAMESPACE, "q", {"spec": {"template": {"spec": {"containers": containers}}}})
    # Sync: a later event on the Deployment makes the operator write the model's status, so it
    # has reconciled after the normalised spec arrived.
    await kube.patch_status(DEPLOYMENTS, NAMESPACE, "q", {
        "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1})
    await kube.wait_for(lambda: condition(kube.get(IMAGEMODELS, NAMESPACE, "q"), "Ready").get("status") == "True")
    writes = [w.path for w in kube.writes()[before:]]
    assert writes == [f"/apis/tinyimg.io/v1alpha1/namespaces/{NAMESPACE}/imagemodels/q/status"]


def condition(obj, kind):
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


async def test_new_weights_with_a_canary_run_beside_the_running_revision_and_a_failing_canary_is_rolled_back(kube, operator):
    canary = {"canary": {"steps": [10, 100], "intervalSeconds": 30}}
    await kube.create(imagemodel("m", source="org/old", rollout=canary))
    first = await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m"))
    old_revision = first["spec"]["template"]["metadata"]["labels"]["tinyimg.io/revision"]
    await kube.patch(IMAGEMODELS, NAMESPACE, "m", {"spec": {"source": "org/new"}})
    canary_dep = await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m-canary"))
    new_revision = canary_dep["spec"]["template"]["metadata"]["labels"]["tinyimg.io/revision"]
    assert new_revision != old_revision and canary_dep["spec"]["replicas"] == 1
    assert canary_dep["spec"]["selector"]["matchLabels"]["tinyimg.io/track"] == "canary"
    assert "org/new" in kube.get("v1/configmaps", NAMESPACE, "m-canary-config")["data"]["config.yaml"]
    # The running revision's Deployment and ConfigMap are left as they were.
    assert kube.get(DEPLOYMENTS, NAMESPACE, "m")["spec"]["template"] == first["spec"]["template"]
    assert "org/old" in kube.get("v1/configmaps", NAMESPACE, "m-config")["data"]["config.yaml"]
    model = await kube.wait_for(lambda: (m := kube.get(IMAGEMODELS, NAMESPACE, "m"))["status"].get("rollout", "").endswith("canary") and m)
    assert [(r["name"], r["phase"], r["weight"]) for r in model["status"]["revisions"]] == [
        (old_revision, "stable", 90), (new_revision, "canary", 10)]
    assert condition(model, "Progressing")["reason"] == "Canary"

    # Its pod crash-loops (what the kubelet reports of a model that cannot load): rolled back.
    await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "m-canary-abc", "namespace": NAMESPACE, "labels": {
            "tinyimg.io/model": "m", "tinyimg.io/track": "canary", "tinyimg.io/revision": new_revision,
            "app.kubernetes.io/managed-by": "tinyimg-operator"}},
        "spec": {"containers": [{"name": "server", "image": SERVER_IMAGE}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "server", "ready": False, "restartCount": 3, "state": {
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
            "lastState": {"terminated": {"exitCode": 1, "message": "model m failed: org/new is not a repo"}}}]}})
    await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "m-canary") is None)
    model = await kube.wait_for(lambda: (m := kube.get(IMAGEMODELS, NAMESPACE, "m"))
                                and condition(m, "Progressing").get("reason") == "RolledBack" and m)
    assert "org/new is not a repo" in condition(model, "Progressing")["message"]
    assert [(r["phase"], r["weight"]) for r in model["status"]["revisions"]] == [("stable", 100), ("rolled-back", 0)]
    assert kube.get("v1/configmaps", NAMESPACE, "m-canary-config") is None

    # Back on the running weights: the rollout is over, the Deployment follows the spec again.
    await kube.patch(IMAGEMODELS, NAMESPACE, "m", {"spec": {"source": "org/old", "limits": {"maxSteps": 40}}})
    await kube.wait_for(lambda: "maxSteps: 40" in kube.get("v1/configmaps", NAMESPACE, "m-config")["data"]["config.yaml"])
    model = await kube.wait_for(lambda: (m := kube.get(IMAGEMODELS, NAMESPACE, "m"))
                                and m["status"]["rollout"] == f"{old_revision} 100% stable, {new_revision} 0% rolled-back" and m)


async def test_each_reconcile_that_changes_something_is_a_span_saying_what_changed(kube, operator, recorded_spans):
    await kube.create(imagemodel("traced", replicas=1))
    await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "traced"))

    def reconciles():
        return [s for s in recorded_spans.get_finished_spans()
                if s.name == "reconcile" and s.attributes["tinyimg.model"] == "traced"]

    first = await kube.wait_for(lambda: reconciles() and reconciles()[0])
    assert first.attributes["k8s.namespace.name"] == NAMESPACE and first.attributes["tinyimg.generation"] == 1
    assert {"Deployment/traced=created", "Service/traced=created"} <= set(first.attributes["tinyimg.changes"])
    # The periodic and child-event passes that change nothing send no span: an idle model is quiet.
    await kube.patch(IMAGEMODELS, NAMESPACE, "traced", {"spec": {"replicas": 2}})
    await kube.wait_for(lambda: kube.get(DEPLOYMENTS, NAMESPACE, "traced")["spec"]["replicas"] == 2)
    changed = await kube.wait_for(lambda: [s for s in reconciles() if s.attributes["tinyimg.generation"] == 2])
    assert any("Deployment/traced=patched" in s.attributes["tinyimg.changes"] for s in changed)
    assert all(s.attributes["tinyimg.changes"] or s.attributes["tinyimg.generation"] == 2 for s in reconciles())
