"""The emulated API server (tests/support/kube/emulator.py) speaks the parts of the protocol the
operator, the router, kubectl, helm and the process kubelet rely on; each has a test here."""

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.support.imagemodels import build_imagemodel
from tests.support.kube import kube, match_field_selector, match_label_selector  # noqa: F401

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "ns", "labels": {"app": "a"}}, "spec": {}}


async def test_create_stamps_identity_and_versions(kube):
    created = await kube.create(POD)
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    first = int(meta["resourceVersion"])
    patched = await kube.patch("v1/pods", "ns", "p1", {"spec": {"x": 1}})
    assert int(patched["metadata"]["resourceVersion"]) > first
    assert patched["metadata"]["generation"] == 2


async def test_status_write_and_noop_patch_leave_generation(kube):
    await kube.create(POD)
    after = await kube.patch_status("v1/pods", "ns", "p1", {"phase": "Running"})
    assert after["metadata"]["generation"] == 1 and after["status"] == {"phase": "Running"}
    rv = after["metadata"]["resourceVersion"]
    same = await kube.patch("v1/pods", "ns", "p1", {"metadata": {"labels": {"app": "a"}}})
    assert same["metadata"]["resourceVersion"] == rv


async def test_watch_from_list_version_sees_only_newer_objects(kube):
    await kube.create(POD)
    async with aiohttp.ClientSession(kube.url) as s:
        listing = await (await s.get("/api/v1/pods")).json()
        assert [p["metadata"]["name"] for p in listing["items"]] == ["p1"]
        rv = listing["metadata"]["resourceVersion"]
        async with s.get(f"/api/v1/pods?watch=true&resourceVersion={rv}") as resp:
            await kube.create({**POD, "metadata": {**POD["metadata"], "name": "p2"}})
            line = await asyncio.wait_for(resp.content.readline(), 5)
            event = json.loads(line)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "p2")


async def test_label_selector_filters_lists(kube):
    await kube.create(POD)
    await kube.create({**POD, "metadata": {"name": "p2", "namespace": "ns", "labels": {"app": "b"}}})
    async with aiohttp.ClientSession(kube.url) as s:
        listing = await (await s.get("/api/v1/namespaces/ns/pods", params={"labelSelector": "app in (b, c)"})).json()
    assert [p["metadata"]["name"] for p in listing["items"]] == ["p2"]


def test_label_selector_semantics():
    labels = {"a": "1", "b": "2"}
    assert match_label_selector(labels, "a=1,b")
    assert match_label_selector(labels, "a!=2,!c")
    assert not match_label_selector(labels, "a notin (1)")
    assert not match_label_selector(labels, "c")


async def test_failed_json_patch_test_is_422(kube):
    await kube.create(POD)
    async with aiohttp.ClientSession(kube.url) as s:
        resp = await s.patch(
            "/api/v1/namespaces/ns/pods/p1",
            data=json.dumps([{"op": "test", "path": "/metadata/name", "value": "other"}]),
            headers={"Content-Type": "application/json-patch+json"},
        )
    assert resp.status == 422


async def test_deleting_owner_deletes_owned_objects(kube):
    owner = await kube.create(POD)
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "p1", "uid": owner["metadata"]["uid"]}
    await kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns", "ownerReferences": [ref]}})
    await kube.delete("v1/pods", "ns", "p1")
    assert kube.get("v1/configmaps", "ns", "c") is None


async def test_writes_leave_out_helper_requests(kube):
    await kube.create(POD)
    async with aiohttp.ClientSession(kube.url) as s:
        await s.patch("/api/v1/namespaces/ns/pods/p1", json={"metadata": {"labels": {"x": "y"}}})
    assert [(w.method, w.name) for w in kube.writes("v1/pods")] == [("PATCH", "p1")]


def test_field_selector_reads_any_dotted_field():
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    assert match_field_selector(pod, "status.phase=Running,metadata.name!=q")
    assert not match_field_selector(pod, "status.phase!=Running")
    assert match_field_selector(pod, "spec.nodeName=")  # absent reads as empty, as the API server does


async def test_bad_selector_is_400(kube):
    async with aiohttp.ClientSession(kube.url) as s:
        resp = await s.get("/api/v1/pods", params={"labelSelector": "a in (b"})
    assert resp.status == 400


async def test_requests_are_recorded_per_user_with_rbac_verbs(kube, tmp_path):
    token = kube.emulator.issue_token("system:serviceaccount:ns:reader")
    await kube.create(POD)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(kube.url, headers=headers) as s:
        await s.get("/api/v1/namespaces/ns/pods")
        await s.get("/api/v1/namespaces/ns/pods/p1")
        await s.patch("/api/v1/namespaces/ns/pods/p1/status", json={"status": {"phase": "Running"}},
                      headers={"Content-Type": "application/merge-patch+json"})
    mine = [(r.verb, r.resource, r.subresource, r.namespace) for r in kube.requests()
            if r.user == "system:serviceaccount:ns:reader"]
    assert mine == [("list", "pods", None, "ns"), ("get", "pods", None, "ns"), ("patch", "pods", "status", "ns")]


# -- what kubectl and helm need (tests/support/kube/emulator.py's protocol) ------------------------
ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "crds" / "imagemodels.tinyimg.io.yaml").read_text())
DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}}, "template": {
        "metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "a", "image": "i", "env": [{"name": "X", "value": "1"}]},
                                {"name": "b", "image": "j"}]},
    }},
}


def imagemodel(name="m", **spec):
    return build_imagemodel(name, "ns", source="org/repo", **spec)


async def call(kube, method, path, body=None, ctype="application/json", **params):
    async with aiohttp.ClientSession(kube.url) as s:
        data = None if body is None else json.dumps(body)
        async with s.request(method, path, data=data, params=params, headers={"Content-Type": ctype}) as resp:
            return resp.status, await resp.json(content_type=None)


async def test_core_discovery_names_its_group_version_and_subresources(kube):
    status, doc = await call(kube, "GET", "/api/v1")
    pods = next(r for r in doc["resources"] if r["name"] == "pods")
    assert (status, doc["groupVersion"], pods["kind"], pods["namespaced"]) == (200, "v1", "Pod", True)
    _, apps = await call(kube, "GET", "/apis/apps/v1")
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")


async def test_openapi_v3_declares_server_side_field_validation(kube):
    _, index = await call(kube, "GET", "/openapi/v3")
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    _, doc = await call(kube, "GET", url.split("?")[0])
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert [p["name"] for p in patch["parameters"]] == ["fieldValidation"]


async def test_lists_carry_kind_and_api_version(kube):
    await kube.create(DEPLOYMENT)
    _, listing = await call(kube, "GET", "/apis/apps/v1/namespaces/ns/deployments")
    assert (listing["kind"], listing["apiVersion"]) == ("DeploymentList", "apps/v1")
    assert (listing["items"][0]["kind"], listing["items"][0]["apiVersion"]) == ("Deployment", "apps/v1")


async def test_put_replaces_and_refuses_a_stale_version(kube):
    created = await kube.create(DEPLOYMENT)
    replaced = {**created, "spec": {**created["spec"], "replicas": 3}}
    status, after = await call(kube, "PUT", "/apis/apps/v1/namespaces/ns/deployments/d", replaced)
    assert (status, after["spec"]["replicas"], after["metadata"]["generation"]) == (200, 3, 2)
    status, _ = await call(kube, "PUT", "/apis/apps/v1/namespaces/ns/deployments/d", replaced)
    assert status == 409  # replaced still names the first version


async def test_strategic_merge_patch_merges_containers_by_name(kube):
    await kube.create(DEPLOYMENT)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}]}}}}
    status, after = await call(kube, "PATCH", "/apis/apps/v1/namespaces/ns/deployments/d", patch,
                               "application/strategic-merge-patch+json")
    containers = after["spec"]["template"]["spec"]["containers"]
    assert status == 200 and [c["name"] for c in containers] == ["a", "b"]
    assert containers[0]["image"] == "i" and [e["name"] for e in containers[0]["env"]] == ["X", "Y"]


async def test_status_subresource_separates_spec_and_status_writes(kube):
    await kube.create(DEPLOYMENT)
    await kube.patch("apps/v1/deployments", "ns", "d", {"status": {"replicas": 9}, "spec": {"replicas": 2}})
    after = kube.get("apps/v1/deployments", "ns", "d")
    assert after["spec"]["replicas"] == 2 and "replicas" not in after.get("status", {})
    status = await kube.patch_status("apps/v1/deployments", "ns", "d", {"readyReplicas": 1})
    assert status["status"] == {"readyReplicas": 1} and status["metadata"]["generation"] == 2


async def test_scale_subresource_reads_and_writes_replicas(kube):
    await kube.create(DEPLOYMENT)
    status, scale = await call(kube, "GET", "/apis/apps/v1/namespaces/ns/deployments/d/scale")
    assert (status, scale["kind"], scale["spec"]["replicas"], scale["status"]["selector"]) == (200, "Scale", 1, "app=d")
    _, scaled = await call(kube, "PATCH", "/apis/apps/v1/namespaces/ns/deployments/d/scale",
                           {"spec": {"replicas": 4}}, "application/merge-patch+json")
    assert scaled["kind"] == "Scale" and kube.get("apps/v1/deployments", "ns", "d")["spec"]["replicas"] == 4


async def test_crd_serves_its_resource_and_validates_defaults_and_prunes(kube):
    await kube.create(CRD)
    crd = kube.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, "imagemodels.tinyimg.io")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {"NamesAccepted": "True", "Established": "True"}
    created = await kube.create(imagemodel())
    assert created["spec"]["replicas"] == 1 and created["spec"]["dtype"] == "auto"  # schema defaults
    status, error = await call(kube, "POST", "/apis/tinyimg.io/v1alpha1/namespaces/ns/imagemodels", imagemodel("bad", family="nope"))
    assert (status, error["reason"]) == (422, "Invalid")
    assert error["details"]["causes"][0]["field"] == "spec.family" and "nope" in error["message"]
    status, error = await call(kube, "POST", "/apis/tinyimg.io/v1alpha1/namespaces/ns/imagemodels",
                               imagemodel("odd", bogus=1), fieldValidation="Strict")
    assert (status, error["details"]["causes"][0]["field"]) == (422, "spec.bogus")
    status, pruned = await call(kube, "POST", "/apis/tinyimg.io/v1alpha1/namespaces/ns/imagemodels", imagemodel("odd", bogus=1))
    assert status == 201 and "bogus" not in pruned["spec"]


async def test_table_shows_the_crd_printer_columns(kube):
    await kube.create(CRD)
    await kube.create(imagemodel())
    async with aiohttp.ClientSession(kube.url) as s:
        resp = await s.get("/apis/tinyimg.io/v1alpha1/namespaces/ns/imagemodels",
                           headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
        doc = await resp.json()
    assert [c["name"] for c in doc["columnDefinitions"]] == [
        "Name", "Family", "Ready", "Replicas", "Desired", "Age", "Load", "Scaling", "Revisions"]
    # Desired is status.desiredReplicas (spec.replicas or the autoscaler's): unset until reconciled.
    assert doc["rows"][0]["cells"][:5] == ["m", "sdxl", "<none>", "<none>", "<none>"]


async def test_finalizers_hold_a_deleted_object_until_removed(kube):
    await kube.create({**POD, "metadata": {**POD["metadata"], "finalizers": ["x/y"]}})
    await kube.delete("v1/pods", "ns", "p1")
    assert kube.get("v1/pods", "ns", "p1")["metadata"]["deletionTimestamp"]
    await kube.patch("v1/pods", "ns", "p1", {"metadata": {"finalizers": None}})
    assert kube.get("v1/pods", "ns", "p1") is None


async def test_a_bound_pod_is_deleted_gracefully_then_for_good(kube):
    await kube.create({**POD, "spec": {"nodeName": "n", "terminationGracePeriodSeconds": 7}})
    await kube.delete("v1/pods", "ns", "p1")
    marked = kube.get("v1/pods", "ns", "p1")
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 7
    status, _ = await call(kube, "DELETE", "/api/v1/namespaces/ns/pods/p1", {"gracePeriodSeconds": 0})
    assert status == 200 and kube.get("v1/pods", "ns", "p1") is None


async def test_namespaces_are_cluster_scoped_objects(kube):
    status, _ = await call(kube, "POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    _, got = await call(kube, "GET", "/api/v1/namespaces/team")
    _, listing = await call(kube, "GET", "/api/v1/namespaces")
    assert (status, got["metadata"]["name"], [n["metadata"]["name"] for n in listing["items"]]) == (201, "team", ["team"])


def _pb_field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


async def test_protobuf_secret_bodies_are_decoded(kube):
    entry = _pb_field(1, b"release") + _pb_field(2, b"\x00\x01")
    meta = _pb_field(1, b"s") + _pb_field(11, _pb_field(1, b"owner") + _pb_field(2, b"helm"))
    secret = _pb_field(1, meta) + _pb_field(2, entry) + _pb_field(3, b"helm.sh/release.v1")
    body = b"k8s\x00" + _pb_field(1, _pb_field(1, b"v1") + _pb_field(2, b"Secret")) + _pb_field(2, secret)
    async with aiohttp.ClientSession(kube.url) as s:
        resp = await s.post("/api/v1/namespaces/ns/secrets", data=body,
                            headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
        assert resp.status == 201
    stored = kube.get("v1/secrets", "ns", "s")
    assert (stored["type"], stored["data"], stored["metadata"]["labels"]) == ("helm.sh/release.v1", {"release": "AAE="}, {"owner": "helm"})


async def test_watch_without_version_starts_with_the_current_objects_and_times_out(kube):
    await kube.create(POD)
    params = {"watch": "true", "timeoutSeconds": "1"}
    async with aiohttp.ClientSession(kube.url) as s, s.get("/api/v1/namespaces/ns/pods", params=params) as resp:
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "p1")]


def tool(name: str) -> str:
    path = ROOT / ".tools" / name / name
    if not path.is_file():
        pytest.fail(f"{name} not found at {path}: run `make tools`", pytrace=False)
    return str(path)


async def run_tool(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)},
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_real_kubectl_applies_gets_scales_and_is_refused_bad_input(kube, tmp_path):
    kc = kube.write_kubeconfig(tmp_path / "kubeconfig")
    kubectl = tool("kubectl")
    await run_tool(kc, kubectl, "apply", "-f", str(ROOT / "crds" / "imagemodels.tinyimg.io.yaml"))
    await run_tool(kc, kubectl, "-n", "ns", "apply", "-f", "-", stdin=json.dumps(imagemodel()))
    assert "unchanged" in await run_tool(kc, kubectl, "-n", "ns", "apply", "-f", "-", stdin=json.dumps(imagemodel()))
    await run_tool(kc, kubectl, "-n", "ns", "scale", "imagemodel/m", "--replicas=2")
    table = await run_tool(kc, kubectl, "-n", "ns", "get", "imgm")
    assert table.split("\n")[0].split() == ["NAME", "FAMILY", "READY", "REPLICAS", "DESIRED", "AGE"]
    # DESIRED is status.desiredReplicas (what the operator applies); no operator runs here.
    assert table.split("\n")[1].split()[:5] == ["m", "sdxl", "<none>", "<none>", "<none>"]
    assert await run_tool(kc, kubectl, "-n", "ns", "get", "imgm", "m", "-o", "jsonpath={.spec.replicas}") == "2"
    with pytest.raises(AssertionError, match=r"spec\.family"):
        await run_tool(kc, kubectl, "-n", "ns", "apply", "-f", "-", stdin=json.dumps(imagemodel("bad", family="nope")))


async def test_real_helm_installs_and_uninstalls_the_chart(kube, tmp_path):
    kc = kube.write_kubeconfig(tmp_path / "kubeconfig")
    helm = tool("helm")
    await run_tool(kc, helm, "install", "t", str(ROOT / "charts" / "tinyimg"), "-n", "ns", "--create-namespace")
    assert kube.get("apps/v1/deployments", "ns", "t-tinyimg-operator") or kube.list("apps/v1/deployments", "ns")
    assert kube.list("v1/secrets", "ns", labels={"owner": "helm", "name": "t"})
    await run_tool(kc, helm, "uninstall", "t", "-n", "ns")
    assert kube.list("apps/v1/deployments", "ns") == [] and kube.list("v1/secrets", "ns") == []
