"""The chart's one autoscaling switch (autoscaling.controller): who may scale ImageModels, which
grants that needs, and the optional HPA / KEDA objects on the ImageModel's scale subresource."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_validate import validate

from tests.chart.helm import find, one, render, template

MODEL = ("models[0].name=m", "models[0].family=sdxl", "models[0].source=org/m",
         "models[0].autoscaling.enabled=true", "models[0].autoscaling.minReplicas=0",
         "models[0].autoscaling.maxReplicas=3", "models[0].autoscaling.targetQueuePerReplica=2",
         "models[0].autoscaling.scaleDownDelaySeconds=120")


def objects(controller: str, *extra: str) -> list[dict[str, Any]]:
    return render(sets=(f"autoscaling.controller={controller}", *MODEL, *extra))


def operator_env(objs: list[dict[str, Any]]) -> dict[str, str]:
    container = one(objs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def verbs(objs: list[dict[str, Any]], role: str, resource: str) -> list[str]:
    return [v for r in one(objs, "Role", role)["rules"] if resource in r["resources"] for v in r["verbs"]]


@pytest.mark.parametrize("controller", ["builtin", "hpa", "keda", "none"])
def test_only_the_builtin_autoscaler_gets_its_grants_and_runs(controller):
    objs = objects(controller)
    builtin = controller == "builtin"
    assert operator_env(objs)["TINYIMG_AUTOSCALER"] == ("builtin" if builtin else "off")
    assert ("patch" in verbs(objs, "-router", "imagemodels")) == builtin
    # The operator lists and watches pods whatever the controller: Degraded comes from failing pods.
    assert verbs(objs, "-operator", "pods") == ["list", "watch"]
    assert len(find(objs, "HorizontalPodAutoscaler")) == (controller == "hpa")
    assert len(find(objs, "ScaledObject")) == (controller == "keda")


def test_hpa_targets_the_imagemodel_scale_subresource_with_the_model_bounds():
    hpa = one(objects("hpa"), "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "tinyimg.io/v1alpha1", "kind": "ImageModel", "name": "m"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)  # an HPA cannot go to 0
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "tinyimg_queue_depth" and metric["pods"]["target"]["averageValue"] == "2"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    validate(hpa, "1.30", strict=True)


def test_keda_scaled_object_keeps_zero_and_queries_the_exported_queue_metric():
    scaled = one(objects("keda"), "ScaledObject")
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 3)
    [trigger] = scaled["spec"]["triggers"]
    assert 'tinyimg_queue_depth{model="m"}' in trigger["metadata"]["query"]
    assert 'tinyimg_inflight_requests{model="m"}' in trigger["metadata"]["query"]
    assert trigger["metadata"]["threshold"] == "2"
    # At zero replicas no pod exports anything: the requests the router holds are what wakes the model.
    assert 'tinyimg_router_waiting_requests{model="m"}' in trigger["metadata"]["query"]


@pytest.mark.parametrize("controller", ["builtin", "hpa", "keda", "none"])
def test_the_router_is_told_the_controller_so_it_holds_requests_only_when_one_can_wake_a_model(controller):
    args = one(objects(controller), "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--autoscaler={controller}" in args


def test_the_external_autoscalers_target_counts_per_engine_replica_of_a_pod():
    """A pod with gpus: 2 runs two engine replicas: it carries twice targetQueuePerReplica."""
    gpus = ("models[0].resources.gpus=2",)
    [trigger] = one(objects("keda", *gpus), "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["threshold"] == "4"
    [metric] = one(objects("hpa", *gpus), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["pods"]["target"]["averageValue"] == "4"


def test_models_without_autoscaling_get_no_external_autoscaler():
    objs = render(sets=("autoscaling.controller=hpa", "models[0].name=m", "models[0].family=sdxl",
                        "models[0].source=org/m"))
    assert find(objs, "HorizontalPodAutoscaler") == []


def test_an_unknown_controller_is_refused_naming_the_value():
    result = template((), ("autoscaling.controller=both",))
    assert result.returncode != 0 and "autoscaling.controller" in result.stderr
