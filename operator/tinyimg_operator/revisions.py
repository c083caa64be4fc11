"""What the rollout of one ImageModel sees (the I/O beside ``tinyimg_operator.rollout``): its pods
by revision and track, and, when an HTTP client is given (the rollout timer), each pod's own
/status: its counters (summed per revision), its config generation, and for a canary pod that is
not Ready, whether its model failed to load (known at once, not after the startup probe gives up).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tinyimg.core import labels
from tinyimg.core.status import PodRevision, RevisionCounters
from tinyimg.kube.objects import build_pod_url, is_pod_ready
from tinyimg_operator.pods import find_pod_problem
from tinyimg_operator.rollout import RolloutObservation

STATUS_TIMEOUT_SECONDS = 2.0


def pod_labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return pod.get("metadata", {}).get("labels") or {}


def is_canary(pod: Mapping[str, Any]) -> bool:
    return pod_labels(pod).get(labels.TRACK) == labels.TRACK_CANARY


def is_rolled_out(deployment: Mapping[str, Any] | None, revision: str) -> bool:
    """The Deployment runs ``revision`` on every replica, all updated and ready."""
    if deployment is None:
        return False
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    template = (spec.get("template") or {}).get("metadata", {}).get("labels") or {}
    wanted = int(spec.get("replicas") or 0)
    return (template.get(labels.REVISION) == revision
            and int(status.get("observedGeneration") or 0) >= int(deployment.get("metadata", {}).get("generation") or 0)
            and int(status.get("updatedReplicas") or 0) >= wanted
            and int(status.get("readyReplicas") or 0) >= wanted
            and int(status.get("replicas") or 0) <= wanted)


def read_pod_status(http: httpx.Client, pod: Mapping[str, Any]) -> dict[str, Any] | None:
    url = build_pod_url(dict(pod))
    if not url:
        return None
    try:
        response = http.get(url + "/status", timeout=STATUS_TIMEOUT_SECONDS)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document
    except (httpx.HTTPError, ValueError):
        return None


def observe_revisions(pods: list[dict[str, Any]], model: str, main: Mapping[str, Any] | None, candidate: str | None,
                      http: httpx.Client | None) -> tuple[RolloutObservation, list[PodRevision] | None]:
    """The rollout's observation and (with ``http``) each pod's revision and config generation."""
    canary_pods = [p for p in pods if is_canary(p)]
    problem = find_pod_problem(canary_pods)
    failed_load = None
    counters: dict[str, RevisionCounters] | None = None
    entries: list[PodRevision] | None = None
    if http is not None:
        counters, entries = {}, []
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            ready, revision = is_pod_ready(pod), pod_labels(pod).get(labels.REVISION)
            document = read_pod_status(http, pod) if ready or is_canary(pod) else None
            load = ((document or {}).get("models") or {}).get(model) or {}
            if is_canary(pod) and not ready and load.get("state") == "failed":
                failed_load = f"{pod['metadata']['name']}: the model failed to load: {load.get('reason') or 'no reason given'}"
            if ready and revision and document is not None:
                total = counters.setdefault(revision, RevisionCounters())
                total.served += int(load.get("served") or 0)
                total.failed += int(load.get("failed") or 0)
                total.generate_seconds += float(load.get("generate_seconds") or 0.0)
                total.denoise_steps += int(load.get("denoise_steps") or 0)
            generation = ((document or {}).get("config") or {}).get("generation")
            entries.append(PodRevision(name=pod["metadata"]["name"], revision=revision, ready=ready,
                                       config_generation=generation if isinstance(generation, int) else None,
                                       acceleration=load.get("acceleration") or None,
                                       startup_seconds=load.get("startup") or None))
    seen = RolloutObservation(
        canary_ready=any(is_pod_ready(p) for p in canary_pods),
        canary_problem=failed_load or (problem.message if problem else None),
        main_rolled_out=candidate is not None and is_rolled_out(main, candidate),
        counters=counters,
    )
    return seen, entries
