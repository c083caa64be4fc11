"""The emulated API server (tests/support/kube/emulator.py) fills kmock's gaps the operator, the
router, kubectl, helm and the process kubelet rely on; each gap has a test here."""

import asyncio
import json

import aiohttp

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
