"""The one place that writes to the Kubernetes API: create-or-patch children, patch status.

Writes happen only when the desired fields differ from the live object (diff.contains), so a
reconcile of an unchanged world sends no write. Patches are JSON merge patches of the desired
object; fields the operator set last time and no longer wants are removed with ``null`` (the
previous desired object is kept in an annotation, the way ``kubectl apply`` does it). The HTTP
client is kubeapi.KubeApi; the per-model locks are locks.ModelLocks.
"""

from __future__ import annotations

import json
from typing import Any

from tinyimg.core import labels
from tinyimg.kube.errors import KubeApiError
from tinyimg_operator.diff import contains, removal_patch
from tinyimg_operator.kubeapi import KubeApi

LAST_APPLIED = f"{labels.GROUP}/last-applied"
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Deployment": "deployments",
    "Job": "jobs",
    labels.KIND: labels.PLURAL,
}
MERGE_PATCH = "application/merge-patch+json"


def object_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{PLURALS[kind]}" if namespace else f"{base}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


def path_of(obj: dict[str, Any], with_name: bool = True) -> str:
    meta = obj["metadata"]
    return object_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"] if with_name else None)


def _owned(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields a patch may send: everything but identity (apiVersion/kind are in the URL)."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def apply_object(api: KubeApi, desired: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Create ``desired`` or bring the live object to it; returns (what happened, the live object)."""
    record = json.dumps(_owned(desired), sort_keys=True, separators=(",", ":"))
    stamped = {**desired, "metadata": {**desired["metadata"], "annotations": {
        **desired["metadata"].get("annotations", {}), LAST_APPLIED: record}}}
    actual = api.get(path_of(desired))
    if actual is None:
        try:
            return "created", api.request("POST", path_of(desired, with_name=False), stamped) or {}
        except KubeApiError as err:
            if err.status != 409:
                raise
            actual = api.get(path_of(desired)) or {}
    if contains(stamped, actual):
        return "unchanged", actual
    previous = json.loads(actual.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED) or "{}")
    patch = removal_patch(previous, _owned(stamped))
    return "patched", api.request("PATCH", path_of(desired), patch, MERGE_PATCH) or {}


def apply_status(api: KubeApi, owner: dict[str, Any], status: dict[str, Any]) -> bool:
    """Patch the ImageModel's status through /status when it differs; True when written."""
    if contains(status, owner.get("status") or {}):
        return False
    api.request("PATCH", path_of(owner) + "/status", {"status": status}, MERGE_PATCH)
    return True


def delete_object(api: KubeApi, api_version: str, kind: str, namespace: str, name: str) -> bool:
    """Delete a child when it exists; True when it did."""
    path = object_path(api_version, kind, namespace, name)
    if api.get(path) is None:
        return False
    try:
        api.request("DELETE", path)
    except KubeApiError as err:
        if err.status != 404:
            raise
        return False
    return True


def post_event(api: KubeApi, owner: dict[str, Any], kind: str, reason: str, message: str, now: str) -> None:
    """An Event on the ImageModel ``owner`` (kopf's own poster works only inside its handlers; the
    rollout loop runs outside them)."""
    meta = owner["metadata"]
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": owner.get("apiVersion") or f"{labels.GROUP}/{labels.VERSION}",
                           "kind": labels.KIND, "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta.get("uid")},
        "type": kind, "reason": reason, "message": message[:1024],
        "source": {"component": labels.OPERATOR_NAME},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": labels.OPERATOR_NAME,
    }
    api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)
