"""Status from the Deployment: conditions, counts, and lastTransitionTime only moving on flips."""

from tinyimg_operator.pods import PodProblem
from tinyimg_operator.status import build_invalid_status, build_status

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def deployment(ready=0, updated=0, replicas=1, generation=1, observed=1, conditions=()):
    return {
        "metadata": {"generation": generation},
        "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
                   "observedGeneration": observed, "conditions": list(conditions)},
    }


def cond(status, kind):
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_ready_deployment_makes_the_model_ready():
    s = build_status("m", "ns", 3, 1, deployment(ready=1, updated=1), None, T0)
    assert (s["readyReplicas"], s["replicas"], s["observedGeneration"]) == (1, 1, 3)
    assert cond(s, "Ready")["status"] == "True" and cond(s, "Progressing")["status"] == "False"
    assert cond(s, "Degraded")["status"] == "False"
    assert s["url"] == "http://m.ns.svc.cluster.local:8000"
    assert s["selector"] == "app.kubernetes.io/name=tinyimg,app.kubernetes.io/component=model-server,tinyimg.io/model=m"


def test_new_deployment_is_progressing_not_ready():
    s = build_status("m", "ns", 1, 2, deployment(ready=0, observed=0), None, T0)
    assert cond(s, "Ready")["reason"] == "ReplicasNotReady"
    assert cond(s, "Progressing")["status"] == "True"


def test_last_transition_time_changes_only_when_status_flips():
    first = build_status("m", "ns", 1, 1, deployment(ready=0), None, T0)
    same = build_status("m", "ns", 1, 1, deployment(ready=0), first, T1)
    assert cond(same, "Ready")["lastTransitionTime"] == T0
    flipped = build_status("m", "ns", 1, 1, deployment(ready=1, updated=1), same, T1)
    assert cond(flipped, "Ready")["lastTransitionTime"] == T1
    assert cond(flipped, "Degraded")["lastTransitionTime"] == T0


def test_stuck_rollout_is_degraded():
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}
    s = build_status("m", "ns", 1, 1, deployment(conditions=[stuck]), None, T0)
    assert (cond(s, "Degraded")["status"], cond(s, "Degraded")["message"]) == ("True", "too slow")


def test_invalid_spec_status_names_the_field():
    s = build_invalid_status("m", "ns", 2, "spec.limits.maxWidth", "too big", None, T0)
    assert cond(s, "Degraded") == {"type": "Degraded", "status": "True", "reason": "InvalidSpec",
                                   "message": "spec.limits.maxWidth: too big", "lastTransitionTime": T0}
    assert cond(s, "Ready")["status"] == "False" and s["readyReplicas"] == 0


def test_a_failing_pod_makes_the_model_degraded_with_its_reason():
    problem = PodProblem("PodFailing", "m-1/server: CrashLoopBackOff: model source /x not found")
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "stuck"}
    s = build_status("m", "ns", 1, 1, deployment(conditions=[stuck]), None, T0, problem)
    degraded = cond(s, "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["message"]) == ("True", "PodFailing", problem.message)
    assert cond(s, "Ready")["status"] == "False"
    healed = build_status("m", "ns", 1, 1, deployment(ready=1, updated=1), s, T1, None)
    assert (cond(healed, "Degraded")["status"], cond(healed, "Degraded")["lastTransitionTime"]) == ("False", T1)
    scaled_down = build_status("m", "ns", 1, 0, deployment(replicas=0), None, T0, problem)  # no pod wanted
    assert cond(scaled_down, "Degraded")["status"] == "False"
