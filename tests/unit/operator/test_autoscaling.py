"""The autoscaling spec (validation, CRD) and the decision function, as table tests (pure)."""

from __future__ import annotations

import jsonschema
import pytest
from pydantic import ValidationError

from tests.support.kube.crd import to_json_schema
from tinyimg.spec import AutoscalingSpec, ModelSpec
from tinyimg_operator.autoscaling import (
    HISTORY_LENGTH,
    AutoscalerState,
    LoadWindow,
    Observation,
    build_autoscaling_status,
    decide,
    measure_cold_start,
    read_state,
    recommend,
)
from tinyimg_operator.crd import build_crd
from tinyimg_operator.imagemodel import InvalidSpecError, read_model_spec

from .conftest import load_example

POLICY = AutoscalingSpec(
    enabled=True, min_replicas=0, max_replicas=4, target_queue_per_replica=2,
    scale_up_stabilization_seconds=5, scale_down_delay_seconds=30, scale_to_zero_after_seconds=60,
    cold_start_timeout_seconds=20,
)


# The spec.

def test_existing_specs_default_to_autoscaling_off():
    spec = read_model_spec(load_example("sdxl"))
    assert spec.autoscaling.enabled is False
    assert "autoscaling" not in load_example("sdxl")["spec"]


@pytest.mark.parametrize(("change", "field"), [
    ({"minReplicas": 3, "maxReplicas": 2}, "spec.autoscaling"),
    ({"scaleDownDelaySeconds": -1}, "spec.autoscaling.scaleDownDelaySeconds"),
    ({"scaleToZeroAfterSeconds": -5}, "spec.autoscaling.scaleToZeroAfterSeconds"),
    ({"targetQueuePerReplica": 0}, "spec.autoscaling.targetQueuePerReplica"),
    ({"coldStartTimeoutSeconds": 0}, "spec.autoscaling.coldStartTimeoutSeconds"),
], ids=["min-over-max", "negative-delay", "negative-idle", "zero-target", "zero-cold-start"])
def test_nonsense_autoscaling_is_refused_naming_the_field(change, field):
    body = load_example("sdxl")
    body["spec"]["autoscaling"] = {"enabled": True, **change}
    with pytest.raises(InvalidSpecError) as err:
        read_model_spec(body)
    assert err.value.field == field
    if "minReplicas" in change:
        assert "minReplicas 3 is over maxReplicas 2" in err.value.message


def test_min_over_max_message_names_both_fields():
    with pytest.raises(ValidationError, match="minReplicas 5 is over maxReplicas 1"):
        AutoscalingSpec(min_replicas=5, max_replicas=1)


def test_crd_refuses_negative_times_and_carries_the_min_max_rule():
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    node = schema["properties"]["spec"]["properties"]["autoscaling"]
    [rule] = node["x-kubernetes-validations"]
    assert rule["rule"].endswith("self.minReplicas <= self.maxReplicas") and "minReplicas" in rule["message"]
    validator = jsonschema.Draft7Validator(to_json_schema(schema))
    body = load_example("sdxl")
    body["spec"]["autoscaling"] = {"enabled": True, "scaleDownDelaySeconds": -1}
    [error] = validator.iter_errors(body)
    assert list(error.path) == ["spec", "autoscaling", "scaleDownDelaySeconds"]
    body["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 0, "maxReplicas": 3}
    validator.validate(body)
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Desired"] == ".status.desiredReplicas" and columns["Replicas"] == ".status.readyReplicas"


def test_autoscaling_stays_out_of_the_pod_config():
    from tinyimg_operator.configmap import build_server_config_yaml

    spec = ModelSpec.model_validate({**load_example("sdxl")["spec"], "name": "m", "autoscaling": {"enabled": True, "maxReplicas": 1}})
    assert "autoscaling" not in build_server_config_yaml(spec)


# The decision function.

@pytest.mark.parametrize(("load", "expected"), [
    (0, 0), (0.5, 1), (2, 1), (2.1, 2), (7, 4), (100, 4),
], ids=["idle-to-min", "some-to-one", "exactly-target", "just-over-target", "clamped-to-max", "far-over-max"])
def test_recommend_is_ceil_of_load_over_target_clamped(load, expected):
    assert recommend(load, POLICY) == expected


@pytest.mark.parametrize(("gpus", "load", "expected"), [(1, 8, 4), (2, 8, 2), (4, 8, 1), (2, 9, 3)],
                         ids=["one-gpu", "two-gpus-half-the-pods", "four-gpus-one-pod", "two-gpus-rounds-up"])
def test_recommend_counts_the_target_per_engine_replica_of_a_pod(gpus, load, expected):
    """A pod given N GPUs runs N engine replicas: it carries N x targetQueuePerReplica."""
    assert recommend(load, POLICY, engines_per_pod=gpus) == expected


def test_recommend_respects_min_replicas():
    assert recommend(0, POLICY.model_copy(update={"min_replicas": 2})) == 2


def _state(replicas, **kw):
    return AutoscalerState(replicas=replicas, **kw)


T = 1000.0
CASES = {
    # name: (state, observation, now, expected replicas, expected reason)
    "burst-starts-stabilizing": (_state(1), Observation(8.0), T, 1, "Stabilizing"),
    "burst-after-stabilization-scales-up": (_state(1, above_since=T - 5), Observation(8.0), T, 4, "ScaleUp"),
    "burst-is-bounded-by-max": (_state(1, above_since=T - 5), Observation(80.0), T, 4, "ScaleUp"),
    "steady-load-fits": (_state(2), Observation(3.0), T, 2, "Steady"),
    "low-load-starts-cooling": (_state(3), Observation(1.0), T, 3, "CoolingDown"),
    "low-load-before-delay-holds": (_state(3, below_since=T - 29), Observation(1.0), T, 3, "CoolingDown"),
    "low-load-after-delay-scales-down": (_state(3, below_since=T - 30), Observation(1.0), T, 1, "ScaleDown"),
    "idle-down-to-one-before-zero": (_state(3, below_since=T - 30, idle_since=T - 31), Observation(0.0), T, 1, "ScaleDown"),
    "idle-at-one-waits-for-zero": (_state(1, below_since=T - 40, idle_since=T - 59), Observation(0.0), T, 1, "Idle"),
    "idle-long-enough-goes-to-zero": (_state(1, below_since=T - 40, idle_since=T - 60), Observation(0.0), T, 0, "ScaleToZero"),
    "zero-without-demand-stays": (_state(0), Observation(0.0), T, 0, "Steady"),
    "zero-with-new-demand-scales-at-once": (_state(0), Observation(0.0, demand_token="t1"), T, 1, "ScaleFromZero"),
    "zero-with-old-demand-token-stays": (_state(0, demand_token="t1"), Observation(0.0, demand_token="t1"), T, 0, "Steady"),
    "blind-holds": (_state(3, below_since=T - 100, idle_since=T - 100), Observation(None, "pods unreachable"), T, 3, "SignalUnavailable"),
    "blind-at-one-never-goes-to-zero": (_state(1, idle_since=T - 1000), Observation(None, "no pod answered"), T, 1, "SignalUnavailable"),
    "demand-seen-at-zero-counts-as-load": (_state(0, demand_token="t1", demand_at=T - 10),
                                           Observation(0.0, demand_token="t1"), T, 1, "ScaleFromZero"),
    "demand-is-done-once-pods-answer": (_state(1, demand_token="t1", demand_at=T - 1),
                                        Observation(0.0, demand_token="t1"), T, 1, "Idle"),
    "replicas-out-of-bounds-are-clamped": (_state(9), Observation(1.0), T, 4, "OutOfBounds"),
    # A replica added less than the model's measured cold start ago may still be starting: kept.
    "down-within-the-cold-start-of-the-last-scale-up-holds": (
        _state(3, below_since=T - 100, scaled_up_at=T - 50), Observation(1.0, cold_start_seconds=60), T, 3, "Starting"),
    "down-past-the-cold-start-of-the-last-scale-up-goes": (
        _state(3, below_since=T - 100, scaled_up_at=T - 61), Observation(1.0, cold_start_seconds=60), T, 1, "ScaleDown"),
    "the-last-known-cold-start-counts-when-none-is-measured": (
        _state(3, below_since=T - 100, scaled_up_at=T - 50, cold_start_seconds=60), Observation(1.0), T, 3, "Starting"),
    "to-zero-within-the-cold-start-holds-too": (
        _state(1, below_since=T - 40, idle_since=T - 60, scaled_up_at=T - 30, cold_start_seconds=45),
        Observation(0.0), T, 1, "Starting"),
}


@pytest.mark.parametrize(("state", "seen", "now", "replicas", "reason"), CASES.values(), ids=CASES.keys())
def test_decide(state, seen, now, replicas, reason):
    decision = decide(POLICY, state, seen, now)
    assert (decision.replicas, decision.reason) == (replicas, reason), decision.message
    assert decision.changed == (replicas != state.replicas)


def test_blind_restarts_every_timer():
    decision = decide(POLICY, _state(2, below_since=T - 29, idle_since=T - 59), Observation(None, "x"), T)
    assert (decision.state.below_since, decision.state.idle_since, decision.state.above_since) == (None, None, None)
    assert decision.message == "holding 2: x"


def test_a_spike_inside_the_delay_restarts_the_cool_down():
    state = _state(3, below_since=T - 25)
    spiked = decide(POLICY, state, Observation(6.0), T).state
    assert spiked.below_since is None
    after = decide(POLICY, spiked, Observation(1.0), T + 10)
    assert (after.replicas, after.state.below_since) == (3, T + 10)


def test_demand_expires_after_the_cold_start_timeout():
    state = _state(1, demand_token="t1", demand_at=T - 20, idle_since=None)
    decision = decide(POLICY, state, Observation(0.0, demand_token="t1"), T)
    assert decision.state.demand_at is None and decision.state.idle_since == T


def test_a_run_of_readings_scales_up_then_down_then_to_zero():
    """Readings every 5 s: a burst, then silence; replicas over time follow the delays."""
    state, replicas = _state(1), []
    for step in range(40):
        now = T + 5 * step
        load = 8.0 if step < 4 else 0.0
        decision = decide(POLICY, state, Observation(load), now)
        state = decision.state
        replicas.append(decision.replicas)
    assert replicas[:3] == [1, 4, 4]  # up once the 5 s stabilization has passed
    first_down = replicas.index(1, 3)
    assert 5 * (first_down - 4) >= POLICY.scale_down_delay_seconds  # not before the delay
    assert 0 in replicas and 5 * (replicas.index(0) - 4) >= POLICY.scale_to_zero_after_seconds
    assert max(replicas) == POLICY.max_replicas


def pod_ready_after(created: str, ready: str | None) -> dict:
    conditions = [{"type": "Ready", "status": "True", "lastTransitionTime": ready}] if ready else []
    return {"metadata": {"creationTimestamp": created}, "status": {"conditions": conditions}}


def test_the_cold_start_is_the_median_of_creation_to_ready_over_ready_pods():
    pods = [pod_ready_after("2026-12-05T10:00:00Z", "2026-12-05T10:00:40Z"),
            pod_ready_after("2026-12-05T10:05:00Z", "2026-12-05T10:06:30Z"),
            pod_ready_after("2026-12-05T10:07:00Z", "2026-12-05T10:07:50Z"),
            pod_ready_after("2026-12-05T10:08:00Z", None)]  # not ready yet: not counted
    assert measure_cold_start(pods) == 50.0
    assert measure_cold_start([pod_ready_after("2026-12-05T10:08:00Z", None)]) is None


def test_a_scale_up_and_the_measured_cold_start_survive_a_restart():
    decision = decide(POLICY, _state(1, above_since=T - 5), Observation(8.0, cold_start_seconds=42.44), T)
    assert (decision.replicas, decision.state.scaled_up_at) == (4, T)
    status = {"autoscaling": build_autoscaling_status(decision, None, T)}
    assert status["autoscaling"]["coldStartSeconds"] == 42.4
    restored = read_state(status, spec_replicas=1, policy=POLICY)
    assert (restored.scaled_up_at, restored.cold_start_seconds) == (T, 42.4)


def test_window_is_the_mean_of_recent_samples():
    window = LoadWindow(seconds=10)
    assert window.add(0, 10) == 10
    assert window.add(5, 0) == 5
    assert window.add(12, 0) == 0  # the first sample left the window


# State in status: what survives a restart.

def test_state_round_trips_through_status():
    decision = decide(POLICY, _state(3, below_since=T - 10), Observation(1.0), T)
    status = {"autoscaling": build_autoscaling_status(decision, None, T)}
    restored = read_state(status, spec_replicas=1, policy=POLICY)
    assert restored == decision.state


@pytest.mark.parametrize(("policy", "spec_replicas", "idle"), [
    (POLICY.model_copy(update={"min_replicas": 1}), 1, 1),
    (POLICY.model_copy(update={"min_replicas": 2}), 1, 2),  # spec.replicas under min: the status rules
    (POLICY, 1, 1),  # idle at one, counting down to zero (idleSince must survive)
], ids=["min-1-at-1", "min-2-spec-1", "idle-at-1-before-zero"])
def test_a_restart_at_idle_resumes_the_same_decision(policy, spec_replicas, idle):
    # A previous run settles at idle and writes its status; a new run (fresh window) reads the
    # state back and decides exactly as the old one would have: no change, no history entry.
    status: dict = {}
    state = read_state(None, spec_replicas, policy)
    for i in range(4):
        old = decide(policy, state, Observation(0.0), T + i)
        status = {"autoscaling": build_autoscaling_status(old, status, T + i)}
        state = old.state
    before = status["autoscaling"]
    assert before["desiredReplicas"] == idle
    restored = read_state(status, spec_replicas, policy)
    assert restored == state
    for i in range(4, 6):
        resumed = decide(policy, restored, Observation(0.0), T + i)
        continued = decide(policy, state, Observation(0.0), T + i)
        assert (resumed.replicas, resumed.reason, resumed.changed) == (continued.replicas, continued.reason, False)
        after = build_autoscaling_status(resumed, status, T + i)
        assert after["history"] == before["history"] and after["desiredReplicas"] == idle
        assert after["idleSince"] == before["idleSince"]  # the countdown to zero is not restarted
        status, restored, state = {"autoscaling": after}, resumed.state, continued.state


def test_without_status_the_state_starts_from_the_clamped_spec_replicas():
    assert read_state(None, 9, POLICY).replicas == 4
    assert read_state({"autoscaling": {}}, 0, POLICY.model_copy(update={"min_replicas": 1})).replicas == 1


def test_history_records_changes_and_is_bounded():
    status: dict = {}
    state = _state(0)
    for i in range(HISTORY_LENGTH + 5):
        decision = decide(POLICY, state, Observation(0.0, demand_token=f"t{i}"), T + i) if state.replicas == 0 else \
            decide(POLICY, state.__class__(replicas=state.replicas, idle_since=T - 100, below_since=T - 100),
                   Observation(0.0), T + i)
        status = {"autoscaling": build_autoscaling_status(decision, status, T + i)}
        state = decision.state
    history = status["autoscaling"]["history"]
    assert len(history) == HISTORY_LENGTH
    assert {(h["from"], h["to"]) for h in history} == {(0, 1), (1, 0)}
    assert history[-1]["reason"] in ("ScaleFromZero", "ScaleToZero") and history[-1]["time"].endswith("Z")


def test_a_steady_model_writes_the_same_status_every_tick():
    first = decide(POLICY, _state(2), Observation(3.0), T)
    status = {"autoscaling": build_autoscaling_status(first, None, T)}
    second = decide(POLICY, first.state, Observation(3.5), T + 5)
    again = build_autoscaling_status(second, status, T + 5)
    assert again.items() <= status["autoscaling"].items()


def test_the_docs_autoscaling_example_is_a_valid_imagemodel():
    import yaml

    from .conftest import ROOT

    guide = (ROOT / "docs" / "guides" / "autoscaling.md").read_text()
    body = yaml.safe_load(guide.split("```yaml\n")[1].split("```")[0])
    spec = read_model_spec(body)
    assert (spec.autoscaling.enabled, spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (True, 0, 4)
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator(to_json_schema(schema)).validate(body)


# The operator's reading of the pods and its settings.

def test_pod_load_is_queued_plus_in_flight_of_this_model_only():
    from tinyimg_operator.autoscaler import sum_pod_load

    docs = [{"models": {"m": {"queue_depth": 3, "in_flight": 1}, "other": {"queue_depth": 9}}},
            {"models": {"m": {"queue_depth": 0, "in_flight": 2}}}, {"models": {}}]
    assert sum_pod_load(docs, "m") == 6


@pytest.mark.parametrize(("env", "builtin"), [({}, True), ({"TINYIMG_AUTOSCALER": "off"}, False)], ids=["default", "off"])
def test_the_operator_switch(env, builtin):
    from tinyimg_operator.settings import load_build_settings

    assert load_build_settings(env).builtin_autoscaler is builtin


def test_bad_switch_and_intervals_are_refused_naming_the_variable():
    from tinyimg_operator.autoscaler import load_autoscaler_settings
    from tinyimg_operator.settings import load_build_settings

    with pytest.raises(ValueError, match="TINYIMG_AUTOSCALER"):
        load_build_settings({"TINYIMG_AUTOSCALER": "both"})
    with pytest.raises(ValueError, match="TINYIMG_AUTOSCALE_INTERVAL_SECONDS"):
        load_autoscaler_settings({"TINYIMG_AUTOSCALE_INTERVAL_SECONDS": "0"})
    assert load_autoscaler_settings({"TINYIMG_AUTOSCALE_INTERVAL_SECONDS": "0.5"}).interval_seconds == 0.5
