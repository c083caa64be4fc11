"""The operator's traces: its OTEL_* settings reach the model pods (with the server's own service
name and the model in the resource attributes), and an autoscaler decision's trace ends with a
``pods_ready`` span once the model's ready replicas reach the decision's."""

from __future__ import annotations

import time

from opentelemetry.trace import Span

from tests.support.otlp import recorded_spans  # noqa: F401  (the fixture)
from tinyimg.core.tracing import span
from tinyimg.spec import ModelSpec
from tinyimg_operator.autoscaler import ScaleTrace, build_decision_attributes, follow_scale
from tinyimg_operator.autoscaling import AutoscalerState, Decision
from tinyimg_operator.deployment import build_deployment
from tinyimg_operator.settings import load_build_settings


def env_of(settings_env: dict[str, str], **fields) -> dict[str, str]:
    model = ModelSpec.model_validate({"name": "m", "family": "sdxl", "source": "org/m", **fields})
    container = build_deployment(model, "ns", load_build_settings(settings_env))["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_the_operators_otel_settings_reach_each_model_pod_as_the_server_service():
    env = env_of({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318", "OTEL_SERVICE_NAME": "tinyimg-operator",
                  "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod", "OTHER": "x"})
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://tempo:4318"
    assert env["OTEL_SERVICE_NAME"] == "tinyimg-server"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment=prod,tinyimg.model=m"
    assert "OTHER" not in env


def test_without_otel_settings_model_pods_get_none_and_spec_env_still_wins():
    assert not [k for k in env_of({}) if k.startswith("OTEL_")]
    env = env_of({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, env={"OTEL_TRACES_SAMPLER": "always_off"})
    assert env["OTEL_TRACES_SAMPLER"] == "always_off"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "tinyimg.model=m"


def decision(previous: int, replicas: int) -> Decision:
    return Decision(replicas, AutoscalerState(replicas=replicas), 3.5, "ScaledUp", "load 3.5 over target 1", previous)


def test_a_scale_up_is_followed_from_the_decision_to_its_ready_pods(recorded_spans):
    up = decision(1, 3)
    with span("autoscale", build_decision_attributes("ns", "m", up)) as decided:
        assert isinstance(decided, Span)
    scaling = ScaleTrace(decided, up.replicas, time.time_ns() - 2_000_000_000)
    assert follow_scale(scaling, {"status": {"readyReplicas": 2}}) is scaling  # not there yet
    assert follow_scale(scaling, {"status": {"readyReplicas": 3}}) is None
    autoscale, ready = recorded_spans.get_finished_spans()
    assert autoscale.attributes["tinyimg.load"] == 3.5 and autoscale.attributes["tinyimg.replicas.desired"] == 3
    assert autoscale.attributes["tinyimg.replicas.previous"] == 1 and autoscale.attributes["tinyimg.reason"] == "ScaledUp"
    assert ready.name == "pods_ready" and ready.parent.span_id == autoscale.context.span_id
    assert ready.context.trace_id == autoscale.context.trace_id and ready.end_time - ready.start_time >= 2_000_000_000
    assert follow_scale(None, {"status": {}}) is None
