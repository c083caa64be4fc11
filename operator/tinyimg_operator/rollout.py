"""Revisions and canary rollouts of one ImageModel, as a pure function of its spec, its
``status.revisions`` and what was observed (``plan_rollout``).

A revision is the model's weights (``ModelSpec.weight_revision``: source, revision, variant,
dtype, family, image). Without ``rollout.canary`` a new revision simply rolls the model's
Deployment, as any change does. With it, the model's Deployment stays on the running (``stable``)
revision, and the new one runs in a second Deployment (``<model>-canary``, one pod) that the
router sends ``steps[i]`` percent of the model's requests once its pod is Ready. Each step lasts
``intervalSeconds``; then the step is judged on the pods' own counters over the step (failed /
answered requests, seconds per denoising step), against the stable revision's over the same time:

- worse by more than ``maxErrorRatio`` (errors) or ``maxLatencyRatio`` (time per step): rolled
  back: the canary gets 0 %, its Deployment goes, the stable revision serves everything, and the
  status says ``RolledBack`` with the reason until the spec names other weights;
- a canary whose pod fails (its model does not load) or is not Ready within the model's
  ``startupTimeoutSeconds``: rolled back the same way;
- else the next step; after the last, ``promoting``: the new revision gets 100 %, the model's
  Deployment rolls to it (its ``strategy``), and once that is done the canary Deployment goes and
  the new revision is ``stable``.

The spec naming the stable revision's weights again ends a canary at once (the canary goes).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

from tinyimg.core.status import RevisionCounters, RevisionStatus
from tinyimg.spec import ModelSpec

STABLE, CANARY, PROMOTING, ROLLED_BACK, SUPERSEDED = "stable", "canary", "promoting", "rolled-back", "superseded"
HISTORY = 5  # revisions kept in the status: the live ones and the latest ended ones


@dataclass(frozen=True)
class RolloutObservation:
    """What the reconcile saw: the canary's pod, the model's Deployment, and (on the rollout
    timer only, from the pods' /status) each revision's counters."""

    canary_ready: bool = False
    canary_problem: str | None = None  # why the canary's pod fails (its first failing pod's reason)
    main_rolled_out: bool = False  # the model's Deployment has every replica updated and ready
    counters: Mapping[str, RevisionCounters] | None = None  # revision -> its pods' counters, summed


@dataclass(frozen=True)
class RolloutPlan:
    revisions: list[RevisionStatus]
    apply_main: bool  # the model's Deployment and ConfigMap follow the spec (else they stay on the stable revision)
    canary: bool  # the canary Deployment runs (from the spec)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    rolled_back: RevisionStatus | None = None  # the spec's revision, when it was rolled back


def parse_time(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC) if value else None


def format_time(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def ratio(failed: int, served: int) -> float:
    return failed / (failed + served) if failed + served else 0.0


def judge_step(candidate: RevisionStatus, stable: RevisionStatus, counters: Mapping[str, RevisionCounters],
               max_error_ratio: float, max_latency_ratio: float) -> tuple[str | None, float, float | None]:
    """(why the step failed or None, the canary's error ratio, its seconds per step) over the step:
    the counters now less those when the step began (a pod restarted meanwhile counts from zero)."""
    window = candidate.window or {}

    def delta(name: str) -> RevisionCounters:
        now, then = counters.get(name, RevisionCounters()), window.get(name, RevisionCounters())
        if now.served < then.served or now.failed < then.failed:  # its pods restarted: from zero
            then = RevisionCounters()
        return RevisionCounters(served=now.served - then.served, failed=now.failed - then.failed,
                                generate_seconds=now.generate_seconds - then.generate_seconds,
                                denoise_steps=now.denoise_steps - then.denoise_steps)

    new, old = delta(candidate.name), delta(stable.name)
    errors, errors_before = ratio(new.failed, new.served), ratio(old.failed, old.served)
    per_step = new.generate_seconds / new.denoise_steps if new.denoise_steps else None
    per_step_before = old.generate_seconds / old.denoise_steps if old.denoise_steps else None
    if errors - errors_before > max_error_ratio:
        return (f"error ratio {errors:.3f} over the step (the running revision {errors_before:.3f}; "
                f"maxErrorRatio {max_error_ratio})"), errors, per_step
    if per_step and per_step_before and per_step > per_step_before * max_latency_ratio:
        return (f"{per_step * 1000:.1f} ms per denoising step (the running revision {per_step_before * 1000:.1f} ms; "
                f"maxLatencyRatio {max_latency_ratio})"), errors, per_step
    return None, errors, per_step


def plan_rollout(spec: ModelSpec, previous: list[RevisionStatus] | None, seen: RolloutObservation,
                 now: datetime.datetime) -> RolloutPlan:
    revision, canary = spec.weight_revision(), spec.rollout.canary
    history = list(previous or [])
    stable = next((r for r in history if r.phase == STABLE), None)
    if canary is None or stable is None or stable.name == revision:
        # No canary (or nothing ran before, or the spec is back on the running weights): the
        # model's Deployment follows the spec, as any change.
        ended = [r.model_copy(update={"phase": SUPERSEDED, "weight": 0}) if r.phase in (CANARY, PROMOTING) else r
                 for r in history if r.name != revision and r.phase != STABLE]
        withdrawn = [("Normal", "CanaryEnded", f"revision {r.name} withdrawn: the spec names other weights")
                     for r in history if r.phase in (CANARY, PROMOTING) and r.name != revision]
        current = RevisionStatus(name=revision, source=spec.source, phase=STABLE, weight=100,
                                 created=stable.created if stable and stable.name == revision else format_time(now))
        if stable is not None and stable.name != revision:
            ended.append(stable.model_copy(update={"phase": SUPERSEDED, "weight": 0}))
        return RolloutPlan(bound([current, *ended]), apply_main=True, canary=False, events=withdrawn)

    others = [r for r in history if r.name not in (stable.name, revision)]
    candidate = next((r for r in history if r.name == revision), None)
    if candidate is not None and candidate.phase == ROLLED_BACK:
        return RolloutPlan(bound([stable.model_copy(update={"weight": 100}), candidate, *others]), apply_main=False,
                           canary=False, rolled_back=candidate)
    events: list[tuple[str, str, str]] = []
    if candidate is None or candidate.phase not in (CANARY, PROMOTING):
        candidate = RevisionStatus(name=revision, source=spec.source, phase=CANARY, weight=canary.steps[0], step=0,
                                   created=format_time(now))
        others = [r.model_copy(update={"phase": SUPERSEDED, "weight": 0}) if r.phase in (CANARY, PROMOTING) else r
                  for r in others]
        events.append(("Normal", "CanaryStarted",
                       f"revision {revision} ({spec.source}) starts as a canary: {canary.steps}% of requests, "
                       f"{canary.interval_seconds}s a step"))

    running: RevisionStatus = stable

    def plan(new: RevisionStatus, apply_main: bool, run_canary: bool) -> RolloutPlan:
        old = running.model_copy(update={"weight": 100 - new.weight})
        return RolloutPlan(bound([old, new, *others]), apply_main, run_canary, events)

    def roll_back(new: RevisionStatus, why: str) -> RolloutPlan:
        events.append(("Warning", "RolledBack", f"revision {revision} rolled back: {why}"))
        back = new.model_copy(update={"phase": ROLLED_BACK, "weight": 0, "reason": "RolledBack", "message": why})
        result = plan(back, apply_main=False, run_canary=False)
        return RolloutPlan(result.revisions, False, False, events, rolled_back=back)

    if candidate.phase == PROMOTING:
        if not seen.main_rolled_out:
            return plan(candidate, apply_main=True, run_canary=True)
        events.append(("Normal", "Promoted", f"revision {revision} is the running revision"))
        done = candidate.model_copy(update={"phase": STABLE, "weight": 100, "step": None, "window": None})
        return RolloutPlan(bound([done, stable.model_copy(update={"phase": SUPERSEDED, "weight": 0}), *others]),
                           apply_main=True, canary=False, events=events)

    if seen.canary_problem:
        return roll_back(candidate, f"its pod fails: {seen.canary_problem}")
    created = parse_time(candidate.created) or now
    if not seen.canary_ready:
        if candidate.step_started is None and (now - created).total_seconds() > spec.startup_timeout_seconds:
            return roll_back(candidate, f"no Ready pod within startupTimeoutSeconds ({spec.startup_timeout_seconds}s)")
        return plan(candidate, apply_main=False, run_canary=True)
    if seen.counters is None:  # judged on the rollout timer only (it reads the pods' counters)
        return plan(candidate, apply_main=False, run_canary=True)
    started = parse_time(candidate.step_started)
    if started is None:  # its first Ready pod: the first step's clock starts
        begun = candidate.model_copy(update={"step_started": format_time(now), "window": dict(seen.counters)})
        return plan(begun, apply_main=False, run_canary=True)
    if (now - started).total_seconds() < canary.interval_seconds:
        return plan(candidate, apply_main=False, run_canary=True)
    why, errors, per_step = judge_step(candidate, stable, seen.counters, canary.max_error_ratio, canary.max_latency_ratio)
    judged = candidate.model_copy(update={"error_ratio": round(errors, 4),
                                          "seconds_per_step": round(per_step, 6) if per_step else None})
    if why is not None:
        return roll_back(judged, why)
    step = (judged.step or 0) + 1
    if step >= len(canary.steps):
        events.append(("Normal", "Promoting", f"revision {revision} passed its steps: it takes 100% and the model's pods roll to it"))
        promoted = judged.model_copy(update={"phase": PROMOTING, "weight": 100, "step": step, "step_started": format_time(now)})
        return plan(promoted, apply_main=True, run_canary=True)
    events.append(("Normal", "CanaryStep", f"revision {revision} takes {canary.steps[step]}% of requests"))
    advanced = judged.model_copy(update={"step": step, "weight": canary.steps[step], "step_started": format_time(now),
                                         "window": dict(seen.counters)})
    return plan(advanced, apply_main=False, run_canary=True)


def bound(revisions: list[RevisionStatus]) -> list[RevisionStatus]:
    """The live revisions first, then the most recent ended ones, at most ``HISTORY`` in all."""
    return revisions[:HISTORY]


def summarize(revisions: list[RevisionStatus] | None) -> str | None:
    """``status.rollout``, for ``kubectl get imagemodels -o wide``: ``abc123 90% stable, def456 10% canary``."""
    live = [r for r in revisions or [] if r.phase in (STABLE, CANARY, PROMOTING) or r.phase == ROLLED_BACK]
    return ", ".join(f"{r.name} {r.weight}% {r.phase}" for r in live) or None

