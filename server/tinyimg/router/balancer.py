"""The least-loaded choice, as a pure function of what the router knows about each ready pod.

Load = the larger of the router's own open requests on the pod and the pod's own backlog
(waiting + generating) from its last /status poll. Not their sum: the pod's backlog already holds
this router's requests, so a sum counts them twice.

Pods differ in speed (GPU kind, other models beside it), and a count of requests alone sends the
next one to an idle slow pod rather than to a fast pod finishing its current request. So the
choice minimises the expected wait: (load + 1) x the pod's recent time per request for this model
(an exponentially weighted average of what this router saw). A pod with no timing yet counts as
the average of the timed ones, so a new pod gets its share at once without being piled on. Ties go
to the lower load, then to the pod this router has sent the fewest requests, then to the lowest
URL: deterministic, and idle pods take turns.

Estimates age. A pod's time is only measured when it is picked, so a pod that was slow once (a
stall, a GC pause, a noisy neighbour) would otherwise never be picked again to show it recovered.
The longer since its last measurement, the closer its estimate moves to the average of the other
pods (half-way every ``LATENCY_HALF_LIFE_SECONDS``): a recovered pod is tried again within
seconds. Old samples also weigh less in the moving average by their age, so that one new
measurement after a long gap decides (a stall's samples do not need many probes to wash out).

The forwarder asks a ``Balancer`` (``LeastExpectedWait`` by default) for a ``Lease`` on a pod: the
lease counts the request in the pod's in-flight requests from the choice until it is released, once,
with the request's time as the pod's latency sample when the answer says something of its speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tinyimg.router.table import BackendTable, PodState

LATENCY_WEIGHT = 0.3  # weight of the newest sample in the moving average
LATENCY_HALF_LIFE_SECONDS = 1.0
# Adapter affinity: how many more requests' worth of wait a pod holding a request's adapters may
# have than the best pod and still be chosen (tinyimg.router.balancer.choose_backend).
AFFINITY_SLACK_REQUESTS = 2
MIN_REQUEST_SECONDS = 0.001


@dataclass(frozen=True)
class Candidate:
    url: str
    inflight: int
    backlog: int
    sent: int
    latency: float = 0.0  # seconds per request, moving average; 0 = not timed yet
    age: float = 0.0  # seconds since ``latency`` was last measured
    adapters: frozenset[str] = frozenset()  # what it holds (tinyimg.router.table.PodState.adapters)
    revision: str | None = None  # its weight revision (a canary rollout splits by it)

    @property
    def load(self) -> int:
        return max(self.inflight, self.backlog)


def aged_latency(latency: float, age: float, neutral: float) -> float:
    """``latency`` moved toward ``neutral``, half-way per half-life of ``age``."""
    if latency <= 0 or neutral <= 0:
        return latency
    keep: float = 0.5 ** (max(age, 0.0) / LATENCY_HALF_LIFE_SECONDS)
    return neutral + (latency - neutral) * keep


def choose_backend(
    candidates: Iterable[Candidate], exclude: frozenset[str] = frozenset(), adapters: frozenset[str] = frozenset()
) -> Candidate | None:
    """The pod to send the next request to, or None when no candidate is left after ``exclude``.
    ``adapters``: what the request names; a pod holding all of them is preferred while its expected
    wait is within ``AFFINITY_SLACK_REQUESTS`` of the best pod's requests of that pod's (loading an
    adapter costs about that; beyond it, the wait costs more and the request goes elsewhere)."""
    pool = [c for c in candidates if c.url not in exclude]
    timed = [c for c in pool if c.latency > 0]
    untimed = sum(c.latency for c in timed) / len(timed) if timed else 0.0

    def expected(c: Candidate) -> float:
        if c.latency <= 0:
            return untimed
        others = [o.latency for o in timed if o is not c]
        return aged_latency(c.latency, c.age, sum(others) / len(others)) if others else c.latency

    def key(c: Candidate) -> tuple[float, int, int, str]:
        return ((c.load + 1) * expected(c), c.load, c.sent, c.url)

    best = min(pool, key=key, default=None)
    if best is None or not adapters or adapters <= best.adapters:
        return best
    holders = [c for c in pool if adapters <= c.adapters]
    if not holders:
        return best
    holder = min(holders, key=key)
    per_request = max(expected(best), MIN_REQUEST_SECONDS)  # untimed pods: their loads compare
    wait = (holder.load + 1) * max(expected(holder), MIN_REQUEST_SECONDS)
    return holder if wait <= (best.load + 1 + AFFINITY_SLACK_REQUESTS) * per_request else best


def update_latency(previous: float | None, sample: float, age: float = 0.0) -> float:
    """The moving average after one more request took ``sample`` seconds, ``age`` seconds after
    the previous sample: the old average's weight halves every half-life."""
    if previous is None:
        return sample
    keep: float = (1 - LATENCY_WEIGHT) * 0.5 ** (max(age, 0.0) / LATENCY_HALF_LIFE_SECONDS)
    return keep * previous + (1 - keep) * sample


def build_candidates(table: BackendTable, model: str, now: float) -> list[Candidate]:
    """What the choice needs of each ready pod of ``model`` at monotonic time ``now``."""
    return [
        Candidate(
            url=p.url, inflight=p.inflight, backlog=p.backlog.get(model, 0), sent=p.sent,
            latency=p.latency.get(model, 0.0), age=now - p.latency_at.get(model, now),
            adapters=p.adapters.get(model, frozenset()), revision=p.revision,
        )
        for p in table.ready_pods(model, now)
    ]


def pick_revision(weights: dict[str, int], credits: dict[str, float], available: set[str | None]) -> str | None:
    """The revision the next request goes to, by smooth weighted round robin over the revisions
    with a weight and an available pod (nginx's: each adds its weight to its credit, the highest
    credit wins and pays the total back): 10 % gets exactly one request in ten, evenly spread, on
    every router replica. None when no weighted revision has a pod: then any pod serves."""
    live = {r: w for r, w in weights.items() if w > 0 and r in available}
    if not live:
        return None
    total = sum(live.values())
    for revision, weight in live.items():
        credits[revision] = credits.get(revision, 0.0) + weight
    chosen = max(sorted(live), key=lambda r: credits[r])
    credits[chosen] -= total
    return chosen


def split_by_revision(table: BackendTable, model: str, candidates: list[Candidate],
                      exclude: frozenset[str]) -> list[Candidate]:
    """During a canary rollout, the candidates of the revision this request goes to."""
    entry = table.models.get(model)
    if entry is None or not entry.weights:
        return candidates
    revision = pick_revision(entry.weights, entry.credits, {c.revision for c in candidates if c.url not in exclude})
    return [c for c in candidates if c.revision == revision] if revision is not None else candidates


class Lease:
    """One request's hold on the pod a balancer chose: counted in the pod's in-flight requests
    from the choice until ``release`` (once: later calls change nothing)."""

    def __init__(self, pod: PodState, model: str):
        self.pod, self.model = pod, model
        self.started = time.perf_counter()
        self.released = False
        pod.inflight += 1
        pod.sent += 1

    @property
    def url(self) -> str:
        return self.pod.url

    def release(self, sample: bool = False) -> float:
        """The request is over: the seconds it took. ``sample``: its time tells the pod's speed for
        this model (it completed, and well), so it goes into the pod's moving average."""
        elapsed = time.perf_counter() - self.started
        if self.released:
            return elapsed
        self.released = True
        self.pod.inflight -= 1
        if sample:
            pod, now = self.pod, time.monotonic()
            age = now - pod.latency_at.get(self.model, now)
            pod.latency[self.model] = update_latency(pod.latency.get(self.model), elapsed, age)
            pod.latency_at[self.model] = now
        return elapsed


class Balancer(Protocol):
    """Which pod takes the next request of a model (the forwarder's policy seam)."""

    def choose(self, model: str, exclude: frozenset[str] = frozenset(), adapters: frozenset[str] = frozenset()) -> Lease | None:
        """A lease on the pod to send to, or None when no ready pod is left outside ``exclude``;
        ``adapters``: those the request names (a pod holding them is preferred)."""

    def has_choice(self, model: str, exclude: frozenset[str] = frozenset()) -> bool:
        """Whether ``choose`` would find a pod (nothing is leased)."""


class LeastExpectedWait(Balancer):
    """The default: the pod with the least expected wait (``choose_backend``) among the ready pods."""

    def __init__(self, table: BackendTable):
        self.table = table

    def choose(self, model: str, exclude: frozenset[str] = frozenset(), adapters: frozenset[str] = frozenset()) -> Lease | None:
        now = time.monotonic()
        candidates = split_by_revision(self.table, model, build_candidates(self.table, model, now), exclude)
        choice = choose_backend(candidates, exclude, adapters)
        if choice is None:
            return None
        pod = self.table.pods[choice.url]
        pod.hint_adapters(model, adapters, now)
        return Lease(pod, model)

    def has_choice(self, model: str, exclude: frozenset[str] = frozenset()) -> bool:
        return choose_backend(build_candidates(self.table, model, time.monotonic()), exclude) is not None
