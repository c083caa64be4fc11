"""values `tracing.env`: the OTEL_* variables reach the router and the operator (each with its own
service name unless one is given), and through the operator every model pod (as tinyimg-server);
empty, no part gets any; a variable that is not OTEL_* is refused by the values schema."""

from __future__ import annotations

from tests.chart.helm import lint, one, render
from tinyimg.spec import ModelSpec
from tinyimg_operator.deployment import build_deployment
from tinyimg_operator.settings import load_build_settings

ENDPOINT = "http://tempo.monitoring:4318"


def env_of(objects: list[dict], suffix: str) -> dict[str, str]:
    container = one(objects, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_tracing_env_reaches_the_router_the_operator_and_through_it_the_model_pods():
    objects = render(sets=(f"tracing.env.OTEL_EXPORTER_OTLP_ENDPOINT={ENDPOINT}",
                           "tracing.env.OTEL_TRACES_SAMPLER=parentbased_traceidratio",
                           "tracing.env.OTEL_TRACES_SAMPLER_ARG=0.25"))
    router, operator = env_of(objects, "-router"), env_of(objects, "-operator")
    for env, service in ((router, "tinyimg-router"), (operator, "tinyimg-operator")):
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT and env["OTEL_SERVICE_NAME"] == service
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    model = ModelSpec.model_validate({"name": "m", "family": "flux", "source": "/m"})
    pod = build_deployment(model, "ns", load_build_settings(operator))["spec"]["template"]["spec"]["containers"][0]
    pod_env = {e["name"]: e.get("value") for e in pod["env"]}
    assert pod_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT and pod_env["OTEL_SERVICE_NAME"] == "tinyimg-server"
    assert pod_env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"


def test_no_tracing_values_no_otel_variables_anywhere():
    objects = render()
    for suffix in ("-router", "-operator"):
        assert not [name for name in env_of(objects, suffix) if name.startswith("OTEL_")]


def test_a_service_name_given_in_the_values_is_kept():
    objects = render(sets=(f"tracing.env.OTEL_EXPORTER_OTLP_ENDPOINT={ENDPOINT}", "tracing.env.OTEL_SERVICE_NAME=imaging"))
    assert env_of(objects, "-router")["OTEL_SERVICE_NAME"] == "imaging"


def test_only_otel_variables_are_accepted():
    result = lint(sets=("tracing.env.HTTP_PROXY=http://proxy:3128",))
    assert result.returncode != 0 and "tracing.env" in result.stdout + result.stderr


def test_the_dashboards_latency_panels_show_exemplars_so_a_slow_bucket_opens_its_trace():
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "charts/tinyimg/dashboards/tinyimg.json").read_text())
    targets = [t for p in dashboard["panels"] for t in p.get("targets", []) if re.search(r"_seconds_bucket", t.get("expr", ""))]
    assert len(targets) >= 6 and all(t.get("exemplar") is True for t in targets)
