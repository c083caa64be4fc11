"""What the Deployment and ReplicaSet controllers decide, as pure functions of the objects.

A Deployment owns one ReplicaSet per pod template (named ``<deployment>-<template hash>``, label
``pod-template-hash``); a ReplicaSet owns its pods. On a template change the new ReplicaSet is
scaled up and the old ones down within ``maxSurge``/``maxUnavailable`` (RollingUpdate), or the old
ones go to zero before the new one starts (Recreate), as kube-controller-manager does it.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

HASH_LABEL = "pod-template-hash"


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def owner_ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    return any(ref.get("uid") == owner["metadata"]["uid"] and ref.get("controller")
               for ref in obj["metadata"].get("ownerReferences") or [])


def is_ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def is_terminating(obj: Mapping[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def is_failed(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Failed"


def build_replicaset(deployment: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    template = copy.deepcopy(deployment["spec"]["template"])
    pod_hash = template_hash(deployment["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
    selector = copy.deepcopy(deployment["spec"]["selector"])
    selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
    meta = deployment["metadata"]
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"{meta['name']}-{pod_hash}", "namespace": meta["namespace"],
                     "labels": dict(template["metadata"]["labels"]), "ownerReferences": [owner_ref(deployment)],
                     "annotations": {"deployment.kubernetes.io/revision": str(meta.get("generation", 1))}},
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    }


def build_pod(replicaset: Mapping[str, Any], suffix: str, node: str) -> dict[str, Any]:
    template = replicaset["spec"]["template"]
    meta = replicaset["metadata"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{meta['name']}-{suffix}", "namespace": meta["namespace"],
                     "labels": dict(template["metadata"].get("labels") or {}),
                     "annotations": dict(template["metadata"].get("annotations") or {}),
                     "ownerReferences": [owner_ref(replicaset)]},
        "spec": {**copy.deepcopy(template.get("spec") or {}), "nodeName": node},
        "status": {"phase": "Pending"},
    }


def build_statefulset_pod(statefulset: Mapping[str, Any], ordinal: int, node: str) -> dict[str, Any]:
    """Pod ``<name>-<ordinal>``: a stable name, and a claim per volumeClaimTemplate named
    ``<template>-<name>-<ordinal>`` that outlives the pod (the StatefulSet controller's naming)."""
    template = statefulset["spec"]["template"]
    meta = statefulset["metadata"]
    name = f"{meta['name']}-{ordinal}"
    spec = copy.deepcopy(template.get("spec") or {})
    claims = [{"name": t["metadata"]["name"], "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-{name}"}}
              for t in statefulset["spec"].get("volumeClaimTemplates") or []]
    spec["volumes"] = [*(spec.get("volumes") or []), *claims]
    labels = {**(template["metadata"].get("labels") or {}), "statefulset.kubernetes.io/pod-name": name}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                     "annotations": dict(template["metadata"].get("annotations") or {}),
                     "ownerReferences": [owner_ref(statefulset)]},
        "spec": {**spec, "nodeName": node, "hostname": name},
        "status": {"phase": "Pending"},
    }


def build_job_pod(job: Mapping[str, Any], suffix: str, node: str) -> dict[str, Any]:
    """A Job's pod ``<job>-<suffix>``, labelled ``job-name`` (and its batch.kubernetes.io form) as
    the Job controller labels them."""
    template = job["spec"]["template"]
    meta = job["metadata"]
    labels = {**(template["metadata"].get("labels") or {}), "job-name": meta["name"],
              "batch.kubernetes.io/job-name": meta["name"]}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{meta['name']}-{suffix}", "namespace": meta["namespace"], "labels": labels,
                     "annotations": dict(template["metadata"].get("annotations") or {}),
                     "ownerReferences": [owner_ref(job)]},
        "spec": {**copy.deepcopy(template.get("spec") or {}), "nodeName": node},
        "status": {"phase": "Pending"},
    }


def job_status(job: Mapping[str, Any], pods: list[Mapping[str, Any]], now: str) -> tuple[dict[str, Any], bool]:
    """A Job's status from its pods, and whether it needs another pod (one completion, no
    parallelism: what a loader Job asks): Complete at the first Succeeded pod, Failed once more
    pods failed than ``backoffLimit`` (default 6) allows."""
    succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
    failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
    active = sum(1 for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                 and not is_terminating(p))
    previous = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}
    status: dict[str, Any] = {"active": active, "succeeded": succeeded, "failed": failed,
                              "startTime": (job.get("status") or {}).get("startTime") or now}
    if succeeded:
        done = previous.get("Complete") or {"type": "Complete", "status": "True", "lastTransitionTime": now}
        status["conditions"] = [done]
        status["completionTime"] = (job.get("status") or {}).get("completionTime") or now
        return status, False
    if failed > int(job["spec"].get("backoffLimit", 6)):
        done = previous.get("Failed") or {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                          "message": "Job has reached the specified backoff limit", "lastTransitionTime": now}
        status["conditions"] = [done]
        return status, False
    return status, active == 0


def _resolve(value: Any, replicas: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = replicas * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def surge_and_unavailable(deployment: Mapping[str, Any]) -> tuple[int, int]:
    replicas = int(deployment["spec"].get("replicas", 1))
    rolling = (deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    surge = _resolve(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = _resolve(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # what the API server's validation would insist on
    return surge, unavailable


def plan_scale(
    deployment: Mapping[str, Any], new_rs: Mapping[str, Any] | None, old_rss: list[dict[str, Any]],
    ready_by_rs: Mapping[str, int], pods_by_rs: Mapping[str, int],
) -> dict[str, int]:
    """ReplicaSet name → the replicas it should have now (the new one included, under its name)."""
    desired = int(deployment["spec"].get("replicas", 1))
    new_name = new_rs["metadata"]["name"] if new_rs else None
    new_now = int(new_rs["spec"]["replicas"]) if new_rs else 0
    targets = {rs["metadata"]["name"]: int(rs["spec"]["replicas"]) for rs in old_rss}
    strategy = (deployment["spec"].get("strategy") or {}).get("type", "RollingUpdate")
    if strategy == "Recreate":
        targets = dict.fromkeys(targets, 0)
        old_left = sum(pods_by_rs.get(name, 0) for name in targets)
        return {**targets, new_name: desired if old_left == 0 else 0}
    surge, unavailable = surge_and_unavailable(deployment)
    if not old_rss or all(v == 0 for v in targets.values()):
        return {**targets, new_name: desired}
    total = new_now + sum(targets.values())
    new_target = min(desired, max(new_now, new_now + desired + surge - total))
    # Scale old ReplicaSets down as far as availability allows: never below desired - maxUnavailable
    # ready pods, counting what the new ReplicaSet already has ready.
    ready_total = sum(ready_by_rs.values())
    removable = max(0, ready_total - (desired - unavailable))
    for rs in sorted(old_rss, key=lambda r: r["metadata"].get("creationTimestamp", "")):
        name = rs["metadata"]["name"]
        unready = max(0, targets[name] - ready_by_rs.get(name, 0))  # unready old pods cost no availability
        cut = min(targets[name], unready + removable)
        removable -= max(0, cut - unready)
        targets[name] -= cut
    # Never exceed desired + maxSurge in total once the old side has shrunk.
    new_target = min(new_target, max(new_now, desired + surge - sum(targets.values())))
    return {**targets, new_name: new_target}


def deployment_status(
    deployment: Mapping[str, Any], pods: list[dict[str, Any]], new_hash: str
) -> dict[str, Any]:
    live = [p for p in pods if not is_terminating(p) and not is_failed(p)]
    updated = [p for p in live if p["metadata"].get("labels", {}).get(HASH_LABEL) == new_hash]
    ready = [p for p in live if is_ready(p)]
    desired = int(deployment["spec"].get("replicas", 1))
    _, unavailable = surge_and_unavailable(deployment)
    complete = len(updated) == desired and len(live) == desired and len(ready) == desired
    available = len(ready) >= desired - unavailable
    previous = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []}

    def condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        old = previous.get(kind) or {}
        status = "True" if ok else "False"
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": since or deployment["metadata"].get("creationTimestamp", "")}

    status = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(live), "updatedReplicas": len(updated), "readyReplicas": len(ready),
        "availableReplicas": len(ready), "unavailableReplicas": max(0, desired - len(ready)),
        "conditions": [
            condition("Available", available, "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                      f"{len(ready)} of {desired} replicas ready"),
            condition("Progressing", True, "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                      "rollout complete" if complete else "rollout in progress"),
        ],
    }
    return {k: v for k, v in status.items() if v != 0 or k in ("replicas", "observedGeneration")}
