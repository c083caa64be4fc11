"""Why a model's pods are failing: read the facts from the API (``read_pod_problems``), judge them (pure).

The Deployment's status says how many replicas are ready, not why one is not. A pod whose
container crash-loops or was terminated with an error, or a pod the kubelet marked ``Failed``,
carries the reason in its status: the container's termination message (with
``terminationMessagePolicy: FallbackToLogsOnError`` the tail of its log, where the server writes
its fatal load error), the waiting message, or the pod's message. ``build_status`` turns the first
such problem into ``Degraded=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tinyimg.core import labels
from tinyimg.core.status import SERVER_FAILURE_REASONS
from tinyimg.kube.errors import KubeApiError
from tinyimg_operator.kubeapi import KubeApi

MESSAGE_LIMIT = 400  # a status condition is read by people and dashboards: the log tail's end, bounded
FAILING_WAIT_REASONS = frozenset(
    {"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError",
     "InvalidImageName", "RunContainerError"}
)


@dataclass(frozen=True)
class PodProblem:
    reason: str  # PodFailed (the pod is Failed), PodFailing (a container crashes or cannot start), PodUnschedulable
    message: str  # "<pod>/<container>: <why>", bounded by MESSAGE_LIMIT


def _bounded(text: str) -> str:
    text = " ".join(text.split())  # a log tail spans lines; a condition message is one line
    return text if len(text) <= MESSAGE_LIMIT else "..." + text[-(MESSAGE_LIMIT - 3):]  # the end says why


def _container_problem(status: Mapping[str, Any]) -> str | None:
    state = status.get("state") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    if terminated and terminated.get("exitCode", 0) != 0:
        return terminated.get("message") or f"exited {terminated.get('exitCode')} ({terminated.get('reason') or 'Error'})"
    if waiting.get("reason") in FAILING_WAIT_REASONS:
        why = last.get("message") or waiting.get("message") or ""
        return f"{waiting['reason']}: {why}" if why else str(waiting["reason"])
    if last and last.get("exitCode", 0) != 0 and not status.get("ready"):
        # Restarted after an error and not ready since: between back-offs a crash-looping container
        # runs again for a while; without this the condition would flap with each restart.
        why = last.get("message") or f"last exit {last.get('exitCode')} ({last.get('reason') or 'Error'})"
        return f"restarted {status.get('restartCount', 0)} times, not ready since: {why}"
    return None


def find_pod_problem(pods: Sequence[Mapping[str, Any]]) -> PodProblem | None:
    """The first failing pod's reason, or None when none fails (pure; pods in name order)."""
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name") or ""):
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue  # a pod on its way out is not the model's current state
        name = meta.get("name") or "?"
        if status.get("phase") == "Failed":
            why = status.get("message") or status.get("reason") or "the pod failed"
            return PodProblem("PodFailed", _bounded(f"{name}: {why}"))
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                why = condition.get("message") or "no node can take it"
                return PodProblem("PodUnschedulable", _bounded(f"{name}: {why}"))
        for container in status.get("containerStatuses") or []:
            why = _container_problem(container)
            if why:
                return PodProblem(read_server_reason(why) or "PodFailing", _bounded(f"{name}/{container.get('name')}: {why}"))
    return None


def read_server_reason(message: str) -> str | None:
    """The reason a model server put first in its failure ("model m failed: AccelerationQuality: ..."),
    when it is one the ImageModel's condition carries as its own (pure)."""
    return next((reason for reason in SERVER_FAILURE_REASONS if f"failed: {reason}:" in message), None)


def read_pods(api: KubeApi, namespace: str, model: str) -> list[dict[str, Any]] | None:
    """The model's pods, or None when they cannot be listed (status then comes from the Deployment alone)."""
    try:
        listing = api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={labels.MODEL}%3D{model}") or {}
    except KubeApiError:
        return None  # e.g. a chart without the pods grant: the Deployment still says Ready/NotReady
    return [p for p in listing.get("items") or [] if (p.get("metadata", {}).get("labels") or {}).get(labels.MODEL) == model]


def read_pod_problem(api: KubeApi, namespace: str, model: str) -> PodProblem | None:
    return find_pod_problem(read_pods(api, namespace, model) or [])
