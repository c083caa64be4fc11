"""ServiceMonitor / PodMonitor and the Grafana dashboard ConfigMap.

kubernetes-validate has no schema for monitoring.coreos.com, and the Prometheus Operator's CRDs
cannot be fetched here, so the monitors are checked against a strict schema of just the fields
the chart writes, with the types and formats the Prometheus Operator API documents."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tests.chart.helm import CHART, NAMESPACE, find, one, render

DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}},
        }},
    },
}
ENDPOINT = {
    "type": "object", "additionalProperties": False, "required": ["port"],
    "properties": {"port": {"type": "string", "minLength": 1}, "path": {"type": "string", "pattern": "^/"},
                   "interval": DURATION, "scrapeTimeout": DURATION},
}


def monitor_schema(kind: str, endpoints_field: str) -> dict[str, Any]:
    return {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {
                "type": "object", "additionalProperties": False, "required": ["selector", endpoints_field],
                "properties": {
                    "selector": LABEL_SELECTOR,
                    "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                        "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                    endpoints_field: {"type": "array", "minItems": 1, "items": ENDPOINT},
                },
            },
        },
    }


MONITORS = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}


@pytest.mark.parametrize("kind", MONITORS)
def test_monitor_matches_the_prometheus_operator_fields_it_uses(every_option: list[dict[str, Any]], kind: str) -> None:
    monitor = one(every_option, kind)
    jsonschema.validate(monitor, monitor_schema(kind, MONITORS[kind]))
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


@pytest.mark.parametrize("kind", MONITORS)
def test_monitor_scrapes_router_and_model_servers_on_their_http_port(every_option: list[dict[str, Any]], kind: str) -> None:
    from tinyimg.core import labels
    from tinyimg.spec import ModelSpec
    from tinyimg_operator.service import build_service

    spec = one(every_option, kind)["spec"]
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "tinyimg"}
    assert spec["selector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["router", "model-server"]},
    ]
    [endpoint] = spec[MONITORS[kind]]
    assert endpoint["path"] == "/metrics"
    # The port name must exist on what it scrapes: the router's Service and pod, and the operator's model Service.
    router_service = one(every_option, "Service", "-router")
    router_pod = one(every_option, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]
    model_service = build_service(ModelSpec(name="m", family="sdxl", source="x/y"), NAMESPACE)
    assert endpoint["port"] in [p["name"] for p in router_service["spec"]["ports"]]
    assert endpoint["port"] in [p["name"] for p in router_pod["ports"]]
    assert endpoint["port"] in [p["name"] for p in model_service["spec"]["ports"]]
    assert model_service["metadata"]["labels"][labels.COMPONENT] in spec["selector"]["matchExpressions"][0]["values"]


def test_monitors_follow_the_operator_scope(every_option: list[dict[str, Any]], defaults: list[dict[str, Any]]) -> None:
    assert one(every_option, "ServiceMonitor")["spec"]["namespaceSelector"] == {"any": True}
    namespaced = render(sets=("monitoring.serviceMonitor.enabled=true",))
    assert one(namespaced, "ServiceMonitor")["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert find(defaults, "ServiceMonitor") == find(defaults, "PodMonitor") == []


def test_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard(
    defaults: list[dict[str, Any]], every_option: list[dict[str, Any]]
) -> None:
    shipped = json.loads((CHART / "dashboards" / "tinyimg.json").read_text())
    cm = one(defaults, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert json.loads(cm["data"]["tinyimg.json"]) == shipped
    moved = one(every_option, "ConfigMap", "-dashboard")
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["annotations"] == {"grafana_folder": "TinyIMGserver"}
