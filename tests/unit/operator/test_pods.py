"""Which pod facts make a model Degraded, and the message it carries (pods.find_pod_problem)."""

import pytest

from tinyimg_operator.pods import MESSAGE_LIMIT, PodProblem, find_pod_problem


def pod(name="m-1", phase="Running", containers=(), message=None, deleting=False):
    meta = {"name": name, "labels": {"tinyimg.io/model": "m"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"phase": phase, "containerStatuses": list(containers)}
    if message:
        status["message"] = message
    return {"metadata": meta, "status": status}


def server(state, last=None, ready=False):
    entry = {"name": "server", "ready": ready, "restartCount": 2, "state": state}
    if last:
        entry["lastState"] = {"terminated": last}
    return entry


def unschedulable(document):
    document["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                         "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]
    return document


RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
CRASHLOOP = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}}


@pytest.mark.parametrize(("pods", "expected"), [
    ([], None),
    ([pod(containers=[server(RUNNING, ready=True)])], None),
    ([pod(containers=[server(RUNNING)])], None),  # starting (loading weights) is not failing
    ([pod(containers=[server({"waiting": {"reason": "ContainerCreating"}})])], None),
    ([pod(containers=[server(CRASHLOOP, {"exitCode": 1, "message": "model source /x/does-not-exist not found"})])],
     PodProblem("PodFailing", "m-1/server: CrashLoopBackOff: model source /x/does-not-exist not found")),
    ([pod(containers=[server(CRASHLOOP)])],  # no termination message: the waiting message
     PodProblem("PodFailing", "m-1/server: CrashLoopBackOff: back-off 10s restarting failed container")),
    ([pod(containers=[server({"terminated": {"exitCode": 2, "message": "bad config"}})])],
     PodProblem("PodFailing", "m-1/server: bad config")),
    ([pod(containers=[server({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})])],
     PodProblem("PodFailing", "m-1/server: exited 137 (OOMKilled)")),
    ([pod(containers=[server({"terminated": {"exitCode": 0, "reason": "Completed"}})])], None),
    ([pod(containers=[server(RUNNING, {"exitCode": 143, "reason": "Error", "message": "killed: startup probe"})])],
     PodProblem("PodFailing", "m-1/server: restarted 2 times, not ready since: killed: startup probe")),
    ([pod(containers=[server(RUNNING, {"exitCode": 1}, ready=True)])], None),  # crashed once, healthy since
    ([pod(phase="Failed", message="hostPath /data cannot be mounted")],
     PodProblem("PodFailed", "m-1: hostPath /data cannot be mounted")),
    ([pod(phase="Failed", message="evicted", deleting=True)], None),  # on its way out
    ([pod("m-b", containers=[server(CRASHLOOP)]), pod("m-a", phase="Failed", message="x")],
     PodProblem("PodFailed", "m-a: x")),  # the first by name, so repeated reconciles agree
    # The server names the reason of a failure the ImageModel carries as its own.
    ([pod(containers=[server(CRASHLOOP, {"exitCode": 1, "message": "model m failed: AccelerationQuality: 21.3 dB"})])],
     PodProblem("AccelerationQuality", "m-1/server: CrashLoopBackOff: model m failed: AccelerationQuality: 21.3 dB")),
    ([pod(containers=[server(CRASHLOOP, {"exitCode": 1, "message": "model m failed: Quality of life"})])],
     PodProblem("PodFailing", "m-1/server: CrashLoopBackOff: model m failed: Quality of life")),
    ([unschedulable(pod(phase="Pending"))],  # as the scheduler writes it: no free GPU anywhere
     PodProblem("PodUnschedulable", "m-1: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")),
])
def test_pod_problem(pods, expected):
    assert find_pod_problem(pods) == expected


def test_a_long_log_tail_is_one_bounded_line_keeping_its_end():
    tail = "Traceback (most recent call last):\n" + "  frame\n" * 200 + "FileNotFoundError: /models/missing"
    found = find_pod_problem([pod(containers=[server(CRASHLOOP, {"exitCode": 1, "message": tail})])])
    assert found is not None and len(found.message) == MESSAGE_LIMIT
    assert found.message.startswith("...") and found.message.endswith("FileNotFoundError: /models/missing")
    assert "\n" not in found.message
