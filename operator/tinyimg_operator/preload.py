"""``cache.preload``: the loader Job that fills a model's ReadWriteMany cache once, and what the
ImageModel's ``status.cache`` says about it.

The Job (``<model>-preload``) runs ``tinyimg preload`` with the model's own ConfigMap and cache
volume; it writes a marker per revision into the cache (tinyimg.runtime.preload) and its JSON to
its termination message. The model's pods are told where the markers live
(``TINYIMG_PRELOAD_MARKER``, tinyimg_operator.deployment) and wait for theirs before loading. A Job's pod template cannot
change, so a new revision of the weights replaces the Job (``apply_preload``). Its pods carry no
model label: no Service, status or autoscaler mistakes them for model servers.
"""

from __future__ import annotations

import json
from typing import Any

from tinyimg.core import labels
from tinyimg.core.status import CacheStatus
from tinyimg.kube.errors import KubeApiError
from tinyimg.spec import ModelSpec
from tinyimg_operator.applier import apply_object, delete_object, path_of
from tinyimg_operator.deployment import TERMINATION_LOG, USER_ID, build_cache_volume
from tinyimg_operator.kubeapi import KubeApi
from tinyimg_operator.objects import CACHE_DIR, CONFIG_DIR, CONFIG_FILE, TMP_DIR, configmap_name, object_meta
from tinyimg_operator.settings import BuildSettings

PRELOAD_LABEL = "tinyimg.io/preload"  # the preload pods' label: the model's name
JOB_NAME_LABEL = "job-name"  # set by the Job controller on its pods
BACKOFF_LIMIT = 3


def preload_job_name(model: str) -> str:
    return f"{model}-preload"


def build_preload_job(spec: ModelSpec, namespace: str, settings: BuildSettings,
                      owner: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if not spec.cache.preload:
        return None
    meta = object_meta(preload_job_name(spec.name), spec.name, namespace, owner)
    meta["labels"][labels.REVISION] = spec.weight_revision()
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": CACHE_DIR}, {"name": "HOME", "value": TMP_DIR}]
    if spec.hf_token_secret:
        ref = {"name": spec.hf_token_secret.name, "key": spec.hf_token_secret.key}
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    container = {
        "name": "preload",
        "image": spec.image or settings.server_image,
        "command": ["tinyimg", "preload", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--model", spec.name,
                    "--termination-log", TERMINATION_LOG],
        "env": env,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": TMP_DIR}, {"name": "cache", "mountPath": CACHE_DIR}],
    }
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "template": {
                "metadata": {"labels": {labels.NAME: labels.APP_NAME, PRELOAD_LABEL: spec.name,
                                        labels.REVISION: spec.weight_revision()}},
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                                        "fsGroup": USER_ID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": configmap_name(spec.name)}},
                                {"name": "tmp", "emptyDir": {}}, build_cache_volume(spec)],
                },
            },
        },
    }


def apply_preload(api: KubeApi, desired: dict[str, Any] | None, namespace: str, model: str) -> tuple[str | None, dict[str, Any] | None]:
    """Create the loader Job, replace it for a new revision, delete it when preload is off:
    (what happened or None, the live Job)."""
    name = preload_job_name(model)
    if desired is None:
        return ("deleted" if delete_object(api, "batch/v1", "Job", namespace, name) else None), None
    live = api.get(path_of(desired))
    if live is not None and (live["metadata"].get("labels") or {}).get(labels.REVISION) != desired["metadata"]["labels"][labels.REVISION]:
        api.request("DELETE", path_of(desired) + "?propagationPolicy=Background")
        live = None
    if live is None:
        what, created = apply_object(api, desired)
        return what, created
    return None, live


def read_job_pods(api: KubeApi, namespace: str, job: str) -> list[dict[str, Any]]:
    try:
        listing = api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={JOB_NAME_LABEL}%3D{job}") or {}
    except KubeApiError:
        return []
    return list(listing.get("items") or [])


def build_cache_status(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``status.cache`` from the loader Job and its pods (pure): loaded once the Job completed, with
    the bytes and revision its pod reported; why not otherwise."""
    if job is None:
        return None
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    revision = (job["metadata"].get("labels") or {}).get(labels.REVISION)
    reports = [_terminated(p) for p in pods]
    if "Complete" in conditions:
        report: dict[str, Any] = next((json.loads(msg) for code, msg in reports if code == 0 and _is_json(msg)), {})
        return CacheStatus(loaded=True, bytes=report.get("bytes"), files=report.get("files"),
                           revision=report.get("revision") or revision, message=None).to_wire()
    if "Failed" in conditions:
        why = next((msg for code, msg in reports if code), None) or conditions["Failed"].get("message") or "failed"
        return CacheStatus(loaded=False, revision=revision, message=f"the preload Job failed: {why}"[:400]).to_wire()
    return CacheStatus(loaded=False, revision=revision, message="the preload Job is filling the cache").to_wire()


def _terminated(pod: dict[str, Any]) -> tuple[int | None, str]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        done = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
        if done:
            return int(done.get("exitCode", 0)), str(done.get("message") or "")
    return None, ""


def _is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
