"""The autoscaling decision (pure): load samples and the last decision in, replicas and why out.

desired = clamp(ceil(load / targetQueuePerReplica), minReplicas, maxReplicas), where load is the
mean of the queued + in-flight samples in a short moving window. Up as soon as the wish to go up
has lasted ``scaleUpStabilizationSeconds`` (from zero at once: a request is waiting); down only once
the wish to go down has lasted ``scaleDownDelaySeconds``; to zero only after
``scaleToZeroAfterSeconds`` without any load. A signal that cannot be read holds the replicas and
restarts every timer, so the autoscaler never scales down, least of all to zero, because it is blind.

Everything a decision depends on, except the window's samples, is in ``AutoscalerState``, which
lives in the ImageModel's ``status.autoscaling``: an operator restart resumes the same timers, so a
restart under load does not scale down and a restart at idle does not flap.
"""

from __future__ import annotations

import datetime
import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Any

from tinyimg.core.status import AutoscalingStatus, ImageModelStatus, ScaleDecision
from tinyimg.spec import AutoscalingSpec

HISTORY_LENGTH = 10  # decisions kept in status.autoscaling.history
WINDOW_SAMPLES = 60  # bound on the in-memory window, whatever its length in seconds


@dataclass(frozen=True)
class AutoscalerState:
    """The durable part (times are Unix seconds of the operator's clock)."""

    replicas: int
    above_since: float | None = None  # since when load asks for more replicas
    below_since: float | None = None  # since when load asks for fewer
    idle_since: float | None = None  # since when load is 0
    demand_token: str | None = None  # the router's last demand annotation seen
    demand_at: float | None = None  # when it was seen: load until a pod answers (or the cold-start timeout)
    scaled_up_at: float | None = None  # the last decision that added replicas
    cold_start_seconds: float | None = None  # the model's measured cold start (pod created -> Ready), last known


@dataclass(frozen=True)
class Observation:
    """One reading: ``load`` is None when the signal could not be read, and ``blind_reason`` says why."""

    load: float | None
    blind_reason: str = ""
    demand_token: str | None = None
    cold_start_seconds: float | None = None  # measured on the pods read now (None: no ready pod)


def measure_cold_start(pods: list[dict[str, Any]]) -> float | None:
    """The model's cold start: the median, over its ready pods, of creation to the Ready condition
    (download, load, compile and warm-up included; API times have one-second resolution)."""
    spans = []
    for pod in pods:
        created = from_time((pod.get("metadata") or {}).get("creationTimestamp"))
        ready = next((c for c in (pod.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Ready" and c.get("status") == "True"), None)
        became = from_time((ready or {}).get("lastTransitionTime"))
        if created is not None and became is not None and became >= created:
            spans.append(became - created)
    return statistics.median(spans) if spans else None


@dataclass(frozen=True)
class Decision:
    replicas: int
    state: AutoscalerState
    load: float | None
    reason: str  # a CamelCase reason (the Event's and the history's)
    message: str
    previous: int  # the replicas before this decision

    @property
    def changed(self) -> bool:
        return self.replicas != self.previous


@dataclass
class LoadWindow:
    """Recent (time, load) samples; the mean over the last ``seconds`` smooths bursts."""

    seconds: float
    samples: list[tuple[float, float]] = field(default_factory=list)

    def add(self, now: float, load: float) -> float:
        self.samples.append((now, load))
        self.samples = [(t, v) for t, v in self.samples if t > now - self.seconds][-WINDOW_SAMPLES:]
        return sum(v for _, v in self.samples) / len(self.samples)

    def clear(self) -> None:
        self.samples.clear()


def recommend(load: float, policy: AutoscalingSpec, engines_per_pod: int = 1) -> int:
    """clamp(ceil(load / (target x engines per pod)), min, max): a pod given N GPUs runs N engine
    replicas of the model, so it carries N times the target."""
    per_pod = policy.target_queue_per_replica * max(1, engines_per_pod)
    wanted = math.ceil(load / per_pod - 1e-9) if load > 0 else 0
    return max(policy.min_replicas, min(policy.max_replicas, wanted))


def initial_replicas(replicas: int, policy: AutoscalingSpec) -> int:
    """The spec's ``replicas``, clamped: where a freshly enabled autoscaler starts."""
    return max(policy.min_replicas, min(policy.max_replicas, replicas))


def decide(policy: AutoscalingSpec, state: AutoscalerState, seen: Observation, now: float,
           engines_per_pod: int = 1) -> Decision:
    current = state.replicas
    demand_at = state.demand_at
    if seen.demand_token and seen.demand_token != state.demand_token:
        demand_at = now  # a new cold start asked for by the router
    if demand_at is not None and now - demand_at >= policy.cold_start_timeout_seconds:
        demand_at = None  # every request that asked has been answered or refused by now
    if seen.load is not None and current > 0:
        demand_at = None  # pods answer: the held requests reach them and are counted there
    cold_start = seen.cold_start_seconds if seen.cold_start_seconds is not None else state.cold_start_seconds
    state = replace(state, demand_token=seen.demand_token or state.demand_token, demand_at=demand_at,
                    cold_start_seconds=cold_start)

    def hold(reason: str, message: str, **changes: Any) -> Decision:
        return Decision(current, replace(state, **changes), seen.load, reason, message, previous=current)

    def scale(to: int, reason: str, message: str) -> Decision:
        fresh = replace(state, replicas=to, above_since=None, below_since=None,
                        scaled_up_at=now if to > current else state.scaled_up_at)
        return Decision(to, fresh, seen.load, reason, message, previous=current)

    bounded = initial_replicas(current, policy)
    if bounded != current:
        return scale(bounded, "OutOfBounds", f"{current} replicas is outside [{policy.min_replicas}, {policy.max_replicas}]")

    if seen.load is None:
        # Blind: keep the replicas and restart every timer, so no scale-down follows from not knowing.
        return hold("SignalUnavailable", f"holding {current}: {seen.blind_reason or 'load unreadable'}",
                    above_since=None, below_since=None, idle_since=None)

    load = seen.load
    if demand_at is not None:
        load = max(load, 1.0)  # requests held by the router for this model count as load
    if current == 0 and load > 0:
        to = max(1, recommend(load, policy, engines_per_pod))
        return scale(to, "ScaleFromZero", f"load {load:g} (router demand) at 0 replicas")
    idle_since = None if load > 0 else (state.idle_since if state.idle_since is not None else now)
    wanted = recommend(load, policy, engines_per_pod)
    if wanted > current:
        since = state.above_since if state.above_since is not None else now
        if now - since >= policy.scale_up_stabilization_seconds:
            return scale(wanted, "ScaleUp", f"load {load:g} over {current} x target {policy.target_queue_per_replica:g}"
                         + (f" x {engines_per_pod} GPUs" if engines_per_pod > 1 else ""))
        return hold("Stabilizing", f"load {load:g} wants {wanted} for {now - since:.0f}s of "
                    f"{policy.scale_up_stabilization_seconds}s", above_since=since, below_since=None, idle_since=idle_since)
    if wanted < current and cold_start and state.scaled_up_at is not None and now - state.scaled_up_at < cold_start:
        # The replicas just added may still be starting: removing one because the queue drained
        # meanwhile would throw its start away (and start another at the next burst).
        return hold("Starting", f"load {load:g} wants {wanted}, but the last scale-up was {now - state.scaled_up_at:.0f}s"
                    f" ago, within the model's measured cold start of {cold_start:.0f}s",
                    above_since=None, below_since=None, idle_since=idle_since)
    if wanted < current:
        since = state.below_since if state.below_since is not None else now
        if wanted == 0:
            idle_for = now - idle_since if idle_since is not None else 0.0
            if idle_for >= policy.scale_to_zero_after_seconds:
                return scale(0, "ScaleToZero", f"idle for {idle_for:.0f}s")
            wanted = 1  # not yet idle long enough for zero: one replica at most comes off
            if current == 1:
                return hold("Idle", f"idle for {idle_for:.0f}s of {policy.scale_to_zero_after_seconds}s before 0",
                            above_since=None, below_since=since, idle_since=idle_since)
        if now - since >= policy.scale_down_delay_seconds:
            return scale(wanted, "ScaleDown", f"load {load:g} below {current} x target "
                         f"{policy.target_queue_per_replica:g} for {now - since:.0f}s")
        return hold("CoolingDown", f"load {load:g} wants {wanted} for {now - since:.0f}s of "
                    f"{policy.scale_down_delay_seconds}s", above_since=None, below_since=since, idle_since=idle_since)
    return hold("Steady", f"load {load:g} fits {current} replicas", above_since=None, below_since=None,
                idle_since=idle_since)


# status.autoscaling <-> AutoscalerState (wire names camelCase, times RFC 3339).

def to_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


def read_state(status: dict[str, Any] | None, spec_replicas: int, policy: AutoscalingSpec) -> AutoscalerState:
    """The state kept in ``status.autoscaling``; a model never autoscaled starts from its clamped spec."""
    saved = ImageModelStatus.parse(status).autoscaling or AutoscalingStatus()
    replicas = saved.desired_replicas
    if replicas is None or replicas < 0:
        return AutoscalerState(replicas=initial_replicas(spec_replicas, policy))
    return AutoscalerState(
        replicas=replicas,
        above_since=from_time(saved.above_since),
        below_since=from_time(saved.below_since),
        idle_since=from_time(saved.idle_since),
        demand_token=saved.demand_token,
        demand_at=from_time(saved.demand_at),
        scaled_up_at=next((from_time(h.time) for h in reversed(saved.history or [])
                           if h.to is not None and h.from_ is not None and h.to > h.from_), None),
        cold_start_seconds=saved.cold_start_seconds,
    )


def build_autoscaling_status(decision: Decision, previous: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """``status.autoscaling`` after a decision; a change appends to the bounded history.

    The timers are always written (``None`` clears them through the merge patch); the load and the
    message change with every reading, so they are written only with a change of replicas or
    reason, which keeps a steady model from writing its status at every tick."""
    old = ImageModelStatus.parse(previous).autoscaling or AutoscalingStatus()
    history = list(old.history or [])
    if decision.changed:
        history.append(ScaleDecision(
            time=to_time(now), from_=decision.previous, to=decision.replicas,
            load=round(decision.load or 0.0, 3), reason=decision.reason, message=decision.message,
        ))
    s = decision.state
    out = AutoscalingStatus(
        desired_replicas=decision.replicas,
        above_since=to_time(s.above_since),
        below_since=to_time(s.below_since),
        idle_since=to_time(s.idle_since),
        demand_token=s.demand_token,
        demand_at=to_time(s.demand_at),
        reason=decision.reason,
        history=history[-HISTORY_LENGTH:],
        cold_start_seconds=round(s.cold_start_seconds, 1) if s.cold_start_seconds is not None else None,
    )
    if decision.changed or decision.reason != old.reason or old.message is None:
        out.message = decision.message
        out.load = round(decision.load, 3) if decision.load is not None else None
    if decision.changed:
        out.last_scale_time = to_time(now)
    return out.to_wire()
