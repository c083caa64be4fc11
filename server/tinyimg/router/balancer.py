"""The least-loaded choice, as a pure function of what the router knows about each ready pod.

Load = the router's own open requests on the pod + the pod's queue depth from its last /status
poll. Ties go to the pod this router has sent the fewest requests, then to the lowest URL:
deterministic (tests can predict it), and idle pods still take turns instead of one taking all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    url: str
    inflight: int
    queue_depth: int
    sent: int

    @property
    def load(self) -> int:
        return self.inflight + self.queue_depth


def choose_backend(candidates: Iterable[Candidate], exclude: frozenset[str] = frozenset()) -> Candidate | None:
    """The pod to send the next request to, or None when no candidate is left after ``exclude``."""
    pool = [c for c in candidates if c.url not in exclude]
    return min(pool, key=lambda c: (c.load, c.sent, c.url), default=None)
