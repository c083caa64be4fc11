"""The ImageModel's status (``tinyimg.core.status.ImageModelStatus``, written as its wire dict),
computed from its Deployment and its pods' problem (pure).

Conditions follow the Kubernetes convention: ``lastTransitionTime`` changes only when a
condition's ``status`` flips, so repeated reconciles of an unchanged world write nothing.
"""

from __future__ import annotations

from typing import Any

from tinyimg.core.status import Condition, ConditionStatus, ImageModelStatus
from tinyimg_operator.objects import selector_string, service_url
from tinyimg_operator.pods import PodProblem
from tinyimg_operator.rollout import CANARY, PROMOTING, STABLE, RolloutPlan


def build_condition(kind: str, ok: bool, reason: str, message: str, now: str, previous: ImageModelStatus) -> Condition:
    status: ConditionStatus = "True" if ok else "False"
    before = previous.condition(kind)
    since = before.last_transition_time if before and before.status == status and before.last_transition_time else now
    return Condition(type=kind, status=status, reason=reason, message=message, last_transition_time=since)


def build_status(
    model: str,
    namespace: str,
    generation: int | None,
    desired_replicas: int,
    deployment: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    now: str,
    pod_problem: PodProblem | None = None,
) -> dict[str, Any]:
    """Status for a valid spec whose children were applied; ``deployment`` as read back (or None),
    ``pod_problem`` the first failing pod's reason (``pods.read_pod_problem``), which wins over the
    Deployment's own conditions: it says why, they only say that."""
    dep_status = (deployment or {}).get("status") or {}
    replicas = int(dep_status.get("replicas") or 0)
    ready = int(dep_status.get("readyReplicas") or 0)
    updated = int(dep_status.get("updatedReplicas") or 0)
    dep_conditions = {c.get("type"): c for c in dep_status.get("conditions") or []}
    seen = deployment is not None and (dep_status.get("observedGeneration") or 0) >= (
        deployment.get("metadata", {}).get("generation") or 0
    )
    prev = ImageModelStatus.parse(previous)

    if desired_replicas == 0:
        ready_cond = ("ScaledToZero", False, "0 replicas wanted (spec.replicas or the autoscaler)")
    elif ready >= desired_replicas:
        ready_cond = ("ReplicasReady", True, f"{ready}/{desired_replicas} replicas ready")
    else:
        ready_cond = ("ReplicasNotReady", False, f"{ready}/{desired_replicas} replicas ready")

    rolling = not seen or updated < desired_replicas or ready < desired_replicas or replicas > desired_replicas
    progressing = (
        ("RollingOut", True, f"{updated}/{desired_replicas} replicas updated, {ready} ready")
        if rolling
        else ("Complete", False, "all replicas are updated and ready")
    )

    stuck = dep_conditions.get("Progressing", {})
    failure = dep_conditions.get("ReplicaFailure", {})
    if pod_problem is not None and desired_replicas > 0:
        degraded = (pod_problem.reason, True, pod_problem.message)
    elif stuck.get("status") == "False" and stuck.get("reason") == "ProgressDeadlineExceeded":
        degraded = ("ProgressDeadlineExceeded", True, stuck.get("message") or "rollout is stuck")
    elif failure.get("status") == "True":
        degraded = ("ReplicaFailure", True, failure.get("message") or "pods cannot be created")
    else:
        degraded = ("AsExpected", False, "")

    reason, ok, message = ready_cond
    return ImageModelStatus(
        replicas=replicas,
        ready_replicas=ready,
        desired_replicas=desired_replicas,
        observed_generation=generation,
        selector=selector_string(model),
        url=service_url(model, namespace),
        conditions=[
            build_condition("Ready", ok, reason, message, now, prev),
            build_condition("Progressing", progressing[1], progressing[0], progressing[2], now, prev),
            build_condition("Degraded", degraded[1], degraded[0], degraded[2], now, prev),
        ],
    ).to_wire()


def build_invalid_status(
    model: str,
    namespace: str,
    generation: int | None,
    field: str,
    message: str,
    previous: dict[str, Any] | None,
    now: str,
    reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """Status for a spec that failed validation or policy: Degraded naming the field and reason."""
    prev = ImageModelStatus.parse(previous)
    text = f"{field}: {message}"
    return ImageModelStatus(
        replicas=0,
        ready_replicas=0,
        observed_generation=generation,
        selector=selector_string(model),
        url=service_url(model, namespace),
        conditions=[
            build_condition("Ready", False, reason, text, now, prev),
            build_condition("Progressing", False, reason, text, now, prev),
            build_condition("Degraded", True, reason, text, now, prev),
        ],
    ).to_wire()


def build_rollout_conditions(conditions: list[dict[str, Any]], plan: RolloutPlan, previous: ImageModelStatus,
                             now: str) -> list[dict[str, Any]]:
    """``Progressing`` during a canary (reason Canary, then Promoting) and after a rollback
    (False, reason RolledBack, with why), over what the Deployment alone would say."""
    live = next((r for r in plan.revisions if r.phase in (CANARY, PROMOTING)), None)
    stable = next((r for r in plan.revisions if r.phase == STABLE), None)
    serving = f"; revision {stable.name} serves" if stable else ""
    if plan.rolled_back is not None:
        back = plan.rolled_back
        override = ("RolledBack", False, f"revision {back.name} ({back.source}) rolled back: {back.message}{serving}")
    elif live is not None and live.phase == CANARY:
        override = ("Canary", True, f"revision {live.name} ({live.source}) takes {live.weight}% of requests "
                                    f"(step {(live.step or 0) + 1}){serving}")
    elif live is not None:
        override = ("Promoting", True, f"revision {live.name} ({live.source}) takes 100%; the model's pods roll to it")
    else:
        return conditions
    reason, ok, message = override
    progressing = build_condition("Progressing", ok, reason, message, now, previous).to_wire()
    return [progressing if c.get("type") == "Progressing" else c for c in conditions]
