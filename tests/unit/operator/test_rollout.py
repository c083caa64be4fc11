"""The canary rollout as a pure function (tinyimg_operator.rollout.plan_rollout): each situation
of a revision's life and what the operator then applies, says and records."""

from __future__ import annotations

import datetime

import pytest

from tinyimg.core.status import RevisionCounters, RevisionStatus
from tinyimg.spec import ModelSpec
from tinyimg_operator.rollout import (
    CANARY,
    PROMOTING,
    ROLLED_BACK,
    STABLE,
    SUPERSEDED,
    RolloutObservation,
    format_time,
    plan_rollout,
    summarize,
)

T0 = datetime.datetime(2026, 12, 5, 9, 0, 0, tzinfo=datetime.UTC)
CANARY_SPEC = {"steps": [10, 50, 100], "intervalSeconds": 60, "maxErrorRatio": 0.05, "maxLatencyRatio": 1.5}


def model(source: str = "org/new", canary: dict | None = CANARY_SPEC, **extra) -> ModelSpec:
    rollout = {"canary": canary} if canary else {}
    return ModelSpec.model_validate({"name": "m", "family": "flux", "source": source, "rollout": rollout,
                                     "startupTimeoutSeconds": 600, **extra})


OLD, NEW = model("org/old").weight_revision(), model("org/new").weight_revision()
STABLE_OLD = RevisionStatus(name=OLD, source="org/old", phase=STABLE, weight=100, created=format_time(T0))


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def counters(old=(100, 0, 10.0, 1000), new=(10, 0, 1.0, 100)) -> dict[str, RevisionCounters]:
    return {name: RevisionCounters(served=v[0], failed=v[1], generate_seconds=v[2], denoise_steps=v[3])
            for name, v in ((OLD, old), (NEW, new))}


def test_the_first_revision_is_stable_and_the_deployment_follows_the_spec():
    plan = plan_rollout(model(), None, RolloutObservation(), T0)
    assert [(r.name, r.phase, r.weight) for r in plan.revisions] == [(NEW, STABLE, 100)]
    assert (plan.apply_main, plan.canary, plan.events) == (True, False, [])


def test_without_a_canary_a_new_revision_rolls_the_deployment():
    plan = plan_rollout(model(canary=None), [STABLE_OLD], RolloutObservation(), T0)
    assert [(r.name, r.phase, r.weight) for r in plan.revisions] == [(NEW, STABLE, 100), (OLD, SUPERSEDED, 0)]
    assert (plan.apply_main, plan.canary) == (True, False)


def test_a_live_change_on_the_same_weights_is_no_new_revision():
    spec = model("org/old", defaults={"steps": 3})
    plan = plan_rollout(spec, [STABLE_OLD], RolloutObservation(), T0)
    assert [(r.name, r.phase, r.weight, r.created) for r in plan.revisions] == [(OLD, STABLE, 100, format_time(T0))]
    assert plan.apply_main and not plan.canary


def test_new_weights_start_a_canary_beside_the_running_revision():
    plan = plan_rollout(model(), [STABLE_OLD], RolloutObservation(), at(1))
    assert [(r.name, r.phase, r.weight, r.step) for r in plan.revisions] == [(OLD, STABLE, 90, None), (NEW, CANARY, 10, 0)]
    assert (plan.apply_main, plan.canary) == (False, True)  # the model's Deployment stays on the old weights
    assert plan.events[0][1] == "CanaryStarted" and "[10, 50, 100]" in plan.events[0][2]
    assert summarize(plan.revisions) == f"{OLD} 90% stable, {NEW} 10% canary"


def walk(seen_at: list[tuple[float, RolloutObservation]]):
    """The plans of successive reconciles, each on the previous one's revisions."""
    revisions, plans = [STABLE_OLD], []
    for seconds, seen in seen_at:
        plan = plan_rollout(model(), revisions, seen, at(seconds))
        revisions = plan.revisions
        plans.append(plan)
    return plans


def test_a_healthy_canary_steps_up_then_promotes_then_becomes_stable():
    ready = RolloutObservation(canary_ready=True, counters=counters())
    later = RolloutObservation(canary_ready=True, counters=counters(old=(200, 0, 20.0, 2000), new=(30, 0, 3.0, 300)))
    plans = walk([
        (0, RolloutObservation()),  # created: waits for its pod
        (5, RolloutObservation(canary_ready=True)),  # ready, but no counters (not the timer): nothing moves
        (6, ready),  # the first step's clock starts
        (30, later),  # within the step
        (66, later),  # judged: step 2
        (126, later),  # judged: step 3 (100 %)
        (186, later),  # judged: promoting
        (190, RolloutObservation(canary_ready=True, main_rolled_out=False)),
        (250, RolloutObservation(canary_ready=True, main_rolled_out=True)),
    ])
    weights = [[(r.phase, r.weight) for r in p.revisions][:2] for p in plans]
    assert weights == [
        [(STABLE, 90), (CANARY, 10)], [(STABLE, 90), (CANARY, 10)], [(STABLE, 90), (CANARY, 10)],
        [(STABLE, 90), (CANARY, 10)], [(STABLE, 50), (CANARY, 50)], [(STABLE, 0), (CANARY, 100)],
        [(STABLE, 0), (PROMOTING, 100)], [(STABLE, 0), (PROMOTING, 100)], [(STABLE, 100), (SUPERSEDED, 0)],
    ]
    assert plans[2].revisions[1].step_started == format_time(at(6))
    assert [p.apply_main for p in plans] == [False] * 6 + [True, True, True]
    assert [p.canary for p in plans] == [True] * 8 + [False]
    assert [e[1] for p in plans for e in p.events] == ["CanaryStarted", "CanaryStep", "CanaryStep", "Promoting", "Promoted"]
    assert plans[-1].revisions[0].name == NEW
    assert plans[4].revisions[1].error_ratio == 0.0 and plans[4].revisions[1].seconds_per_step == 0.01


@pytest.mark.parametrize(("new_counts", "words"), [
    pytest.param((30, 10, 3.0, 300), "error ratio 0.250 over the step", id="errors"),
    pytest.param((30, 0, 6.0, 300), "20.0 ms per denoising step (the running revision 10.0 ms", id="slower"),
])
def test_a_canary_worse_than_the_running_revision_is_rolled_back(new_counts, words):
    plans = walk([
        (0, RolloutObservation()),
        (6, RolloutObservation(canary_ready=True, counters=counters(new=(10, 0, 1.0, 100)))),
        (70, RolloutObservation(canary_ready=True, counters=counters(old=(200, 0, 20.0, 2000),
                                                                     new=(10 + new_counts[0], new_counts[1], 1.0 + new_counts[2], 100 + new_counts[3])))),
    ])
    last = plans[-1]
    assert [(r.name, r.phase, r.weight) for r in last.revisions] == [(OLD, STABLE, 100), (NEW, ROLLED_BACK, 0)]
    assert (last.apply_main, last.canary) == (False, False)
    assert last.rolled_back is not None and words in last.rolled_back.message
    assert last.events[-1][:2] == ("Warning", "RolledBack")


def test_a_canary_whose_pod_fails_is_rolled_back_at_once_and_stays_so():
    plans = walk([(0, RolloutObservation()), (3, RolloutObservation(canary_problem="m-canary-1: the model failed to load: no such repo"))])
    assert plans[-1].rolled_back.message == "its pod fails: m-canary-1: the model failed to load: no such repo"
    again = plan_rollout(model(), plans[-1].revisions, RolloutObservation(), at(10))
    assert (again.apply_main, again.canary, again.events) == (False, False, [])  # no new canary for the same weights
    assert again.rolled_back is not None and [r.weight for r in again.revisions] == [100, 0]
    fresh = plan_rollout(model("org/newer"), again.revisions, RolloutObservation(), at(20))
    assert [(r.phase, r.weight) for r in fresh.revisions][:2] == [(STABLE, 90), (CANARY, 10)]


def test_a_canary_never_ready_within_the_startup_timeout_is_rolled_back():
    plans = walk([(0, RolloutObservation()), (599, RolloutObservation()), (601, RolloutObservation())])
    assert plans[1].rolled_back is None and plans[2].rolled_back is not None
    assert "no Ready pod within startupTimeoutSeconds (600s)" in plans[2].rolled_back.message


def test_the_spec_back_on_the_running_weights_withdraws_the_canary():
    started = plan_rollout(model(), [STABLE_OLD], RolloutObservation(), T0)
    back = plan_rollout(model("org/old"), started.revisions, RolloutObservation(), at(5))
    assert [(r.name, r.phase, r.weight) for r in back.revisions] == [(OLD, STABLE, 100), (NEW, SUPERSEDED, 0)]
    assert (back.apply_main, back.canary) == (True, False) and back.events[0][1] == "CanaryEnded"


def test_a_counter_reset_counts_from_zero_and_the_history_is_bounded():
    plans = walk([
        (0, RolloutObservation()),
        (6, RolloutObservation(canary_ready=True, counters=counters(new=(500, 0, 50.0, 5000)))),
        (70, RolloutObservation(canary_ready=True, counters=counters(old=(200, 0, 20.0, 2000), new=(5, 0, 0.05, 50)))),
    ])
    assert plans[-1].revisions[1].weight == 50  # the canary pod restarted: its 5 requests since, all fine
    revisions = [STABLE_OLD]
    for i in range(8):
        revisions = plan_rollout(model(f"org/v{i}"), revisions, RolloutObservation(), at(i)).revisions
    assert len(revisions) == 5 and revisions[0].name == OLD and revisions[1].source == "org/v7"
