"""The backend table: which models exist, which pods serve each, and what the router knows of them.

Discovery writes models and pods; the poller and the forwarder write reachability and load. All
of it lives on one event loop, so plain attributes suffice (no locks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tinyimg.wire.contract import TenantStatus

STATE_READY = "ready"


@dataclass
class PodState:
    """One backend process or pod. ``url`` is its identity: a static backend may serve many models."""

    url: str
    name: str
    ready: bool = True  # discovery's view: a Kubernetes Ready condition; static backends are always True
    reachable: bool = True  # the last poll or forward reached it
    inflight: int = 0  # requests this router has open on it now
    sent: int = 0  # requests this router has sent it, ever (balancer tie-break)
    queue_depth: dict[str, int] = field(default_factory=dict)  # model -> waiting, from the last poll
    backlog: dict[str, int] = field(default_factory=dict)  # model -> waiting + generating, last poll
    latency: dict[str, float] = field(default_factory=dict)  # model -> moving average s/request seen
    latency_at: dict[str, float] = field(default_factory=dict)  # model -> monotonic time of the last sample
    hold_until: float = 0.0  # monotonic; out of the rotation until then (it answered 503 draining)
    model_states: dict[str, str] = field(default_factory=dict)  # model -> state, from the last poll
    last_error: str | None = None
    slow_polls: int = 0  # polls in a row that timed out (the poller's patience)
    tenants: dict[str, TenantStatus] = field(default_factory=dict)  # tenant -> its load here, last poll
    # model -> the adapters it holds: declared names, and run-time ones by SHA-256 and by label
    # (last poll, plus what this router sent it lately: ``hint_adapters``).
    adapters: dict[str, frozenset[str]] = field(default_factory=dict)
    revision: str | None = None  # its weight revision (Kubernetes: the pod's label), for a canary's split
    adapter_hints: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, key) -> monotonic time sent

    def hint_adapters(self, model: str, keys: frozenset[str], now: float) -> None:
        """This router just sent it a request naming ``keys``: it holds them once that runs, even
        before a poll says so."""
        if not keys:
            return
        for key in keys:
            self.adapter_hints[(model, key)] = now
        self.adapters[model] = self.adapters.get(model, frozenset()) | keys

    def read_adapters(self, reported: dict[str, frozenset[str]], now: float) -> None:
        """A poll's view, with the hints younger than ``ADAPTER_HINT_SECONDS`` (a poll that began
        before the pod loaded an adapter must not make the router forget it)."""
        self.adapter_hints = {k: t for k, t in self.adapter_hints.items() if now - t < ADAPTER_HINT_SECONDS}
        merged = {model: set(keys) for model, keys in reported.items()}
        for model, key in self.adapter_hints:
            merged.setdefault(model, set()).add(key)
        self.adapters = {model: frozenset(keys) for model, keys in merged.items()}

    def serves(self, model: str, now: float | None = None) -> bool:
        """Ready for ``model``: discovery says ready, it answered lately, it is not draining, and it
        has the model loaded."""
        if self.hold_until and self.hold_until > (time.monotonic() if now is None else now):
            return False
        return self.ready and self.reachable and self.model_states.get(model, STATE_READY) == STATE_READY


# How long the router believes a pod holds an adapter it sent a request for, without a poll saying so.
ADAPTER_HINT_SECONDS = 5.0


@dataclass
class ModelEntry:
    name: str
    family: str | None = None  # from the ImageModel, or from a backend's /models
    state: str | None = None  # the ImageModel's own state (Kubernetes); None in static mode
    reason: str | None = None
    pods: list[str] = field(default_factory=list)  # pod urls
    cold_start_timeout: float | None = None  # hold requests this long while no pod serves
    # (width, height, steps) a request that names none gets, from a backend's /models: what a
    # request's work (tinyimg.router.tenancy) is counted with
    defaults: tuple[int, int, int] | None = None
    scales_from_zero: bool = False  # autoscaled: a held request asks for a pod (else it only waits)
    # revision -> percent of requests, while a canary rollout runs (the ImageModel's status.revisions)
    weights: dict[str, int] = field(default_factory=dict)
    # Smooth weighted round robin over the revisions (tinyimg.router.balancer.pick_revision)
    credits: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendRef:
    url: str
    name: str
    ready: bool = True
    revision: str | None = None


@dataclass(frozen=True)
class ModelBackends:
    """What discovery knows of one model: the desired content of its table entry."""

    family: str | None = None
    state: str | None = None
    reason: str | None = None
    backends: tuple[BackendRef, ...] = ()
    cold_start_timeout: float | None = None
    scales_from_zero: bool = False
    weights: tuple[tuple[str, int], ...] = ()  # revision -> percent, while a canary rollout runs


class BackendTable:
    def __init__(self) -> None:
        self.models: dict[str, ModelEntry] = {}
        self.pods: dict[str, PodState] = {}
        self.synced = False  # discovery has listed everything once (readiness)

    def sync(self, desired: dict[str, ModelBackends]) -> None:
        """Make the table hold exactly ``desired`` (level-based, safe to repeat). Pods that stay keep
        what the router learned of them (load, reachability); a family learned from a backend's
        /models is kept while discovery knows none."""
        for name in list(self.models):
            if name not in desired:
                del self.models[name]
        wanted: dict[str, BackendRef] = {}
        for name, spec in desired.items():
            entry = self.models.setdefault(name, ModelEntry(name))
            entry.family = spec.family or entry.family
            entry.state, entry.reason = spec.state, spec.reason
            entry.cold_start_timeout, entry.scales_from_zero = spec.cold_start_timeout, spec.scales_from_zero
            if dict(spec.weights) != entry.weights:
                entry.weights, entry.credits = dict(spec.weights), {}
            entry.pods = [b.url for b in spec.backends]
            for b in spec.backends:
                wanted[b.url] = b
        for url in list(self.pods):
            if url not in wanted:
                del self.pods[url]
        for url, ref in wanted.items():
            pod = self.pods.get(url)
            if pod is None:
                pod = self.pods[url] = PodState(url=url, name=ref.name)
            pod.name, pod.ready, pod.revision = ref.name, ref.ready, ref.revision

    def pods_of(self, model: str) -> list[PodState]:
        entry = self.models.get(model)
        return [self.pods[u] for u in entry.pods if u in self.pods] if entry else []

    def ready_pods(self, model: str, now: float | None = None) -> list[PodState]:
        return [p for p in self.pods_of(model) if p.serves(model, now)]

    def model_family(self, model: str) -> str | None:
        entry = self.models.get(model)
        return entry.family if entry else None
