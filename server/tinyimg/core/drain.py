"""How long shutdown may take, derived in one place from a model's request timeout.

The model server, the operator (the pod's terminationGracePeriodSeconds and preStop delay) and the
router (its upstream timeout) all read these numbers, so they cannot drift apart. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# Time for the endpoints controller and the router to stop sending new requests to a pod whose
# readiness turned 503, before the server stops accepting connections.
PRESTOP_SECONDS = 5
# Slack after the drain for uvicorn to close connections and the process to exit.
EXIT_SLACK_SECONDS = 10
# Seconds a router adds to a model's request timeout before it gives up on an upstream answer
# (the model's own deadline answers first, as a JSON 504).
UPSTREAM_SLACK_SECONDS = 30


@dataclass(frozen=True)
class DrainTiming:
    prestop_seconds: int  # readiness already 503; still accepting (the preStop sleep)
    drain_seconds: int  # queued and in-flight work may finish within this
    grace_seconds: int  # the pod's terminationGracePeriodSeconds: everything above, plus slack


def build_drain_timing(request_timeouts: Iterable[float]) -> DrainTiming:
    """A server serving models with these request timeouts: queued work has at most the longest
    timeout left (its deadline counts from arrival), so draining never needs longer than that."""
    drain = math.ceil(max(request_timeouts, default=0.0))
    return DrainTiming(PRESTOP_SECONDS, drain, PRESTOP_SECONDS + drain + EXIT_SLACK_SECONDS)


def build_upstream_timeout(request_timeout: float) -> float:
    """How long a router waits for a model's answer: the model's deadline plus slack."""
    return request_timeout + UPSTREAM_SLACK_SECONDS
