"""The Grafana dashboard: valid JSON, and every metric it queries is one the code exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.chart.exported_metrics import UnresolvedMetricName, read_exported_series, read_metric_families
from tests.chart.helm import CHART, ROOT

DASHBOARD = CHART / "dashboards" / "tinyimg.json"
METRIC = re.compile(r"\btinyimg_[a-zA-Z0-9_:]+")


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def queried_metrics(dashboard: dict[str, Any]) -> set[str]:
    return {m for expr in queries(dashboard) for m in METRIC.findall(expr)}


def test_dashboard_is_valid_grafana_json_with_unique_panel_ids() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "tinyimg-overview"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for expr in queries(dashboard):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        assert METRIC.search(expr), f"query names no tinyimg metric: {expr}"


def test_every_queried_metric_is_exported_by_the_code() -> None:
    exported = read_exported_series(ROOT / "server")
    missing = queried_metrics(load_dashboard()) - exported
    assert not missing, f"the dashboard queries series no code under server/ exports: {sorted(missing)}"


@pytest.mark.parametrize("series, topic", [
    ("tinyimg_requests_total", "request rate and errors per model"),
    ("tinyimg_request_duration_seconds_bucket", "latency p50/p95"),
    ("tinyimg_queue_depth", "queue depth"),
    ("tinyimg_batch_size_bucket", "batch size"),
    ("tinyimg_device_memory_bytes", "device memory"),
    ("tinyimg_router_ready_pods", "ready pods"),
    ("tinyimg_jobs", "jobs by state"),
    ("tinyimg_job_queued_seconds_bucket", "time queued vs generating"),
    ("tinyimg_sse_clients", "SSE clients"),
    ("tinyimg_webhook_deliveries_total", "webhook deliveries by outcome"),
    ("tinyimg_tenant_image_steps_total", "work served per tenant"),
    ("tinyimg_tenant_queued", "waiting per tenant"),
    ("tinyimg_tenant_rejected_total", "refused per tenant (pod)"),
    ("tinyimg_router_tenant_rejected_total", "refused per tenant (router quota)"),
])
def test_dashboard_covers_each_operational_question(series: str, topic: str) -> None:
    assert series in queried_metrics(load_dashboard()), topic


def test_latency_panels_show_p50_and_p95() -> None:
    exprs = queries(load_dashboard())
    for quantile in ("0.5", "0.95"):
        assert any(f"histogram_quantile({quantile}, " in e and "tinyimg_request_duration_seconds_bucket" in e for e in exprs)


IMPORTS = "import prometheus_client\nfrom prometheus_client import Counter, Gauge, Histogram\n"
SCAN_CASES = {
    "counter-gets-total": ('Counter("tinyimg_x", "h")', {"tinyimg_x_total", "tinyimg_x_created"}),
    "counter-named-total": ('c = prometheus_client.Counter("tinyimg_y_total", "h")', {"tinyimg_y_total", "tinyimg_y_created"}),
    "histogram-series": ('Histogram(name="tinyimg_h_seconds", documentation="h")',
                         {"tinyimg_h_seconds_bucket", "tinyimg_h_seconds_sum", "tinyimg_h_seconds_count", "tinyimg_h_seconds_created"}),
    "gauge-family-in-collector": ('from prometheus_client.core import GaugeMetricFamily as G\nG("tinyimg_g", "h", labels=["a"])',
                                  {"tinyimg_g"}),
    "namespace-keyword": ('Gauge("depth", "h", namespace="tinyimg")', {"tinyimg_depth"}),
    "module-constant-name": ('NAME = "tinyimg_c"\nGauge(NAME, "h")', {"tinyimg_c"}),
}


@pytest.mark.parametrize("source, expected", SCAN_CASES.values(), ids=SCAN_CASES.keys())
def test_metric_scan_expands_each_constructor_into_its_series(source: str, expected: set[str]) -> None:
    from tests.chart.exported_metrics import series_names

    [(name, constructor)] = read_metric_families(IMPORTS + source, "case.py").items()
    assert series_names(name, constructor) == expected


def test_metric_scan_refuses_a_name_it_cannot_read() -> None:
    with pytest.raises(UnresolvedMetricName, match=r"case\.py:3"):
        read_metric_families(IMPORTS + 'Gauge(make_name(), "h")', "case.py")


def test_metric_scan_ignores_constructors_not_from_prometheus_client() -> None:
    assert read_metric_families("from collections import Counter\nCounter(words)", "case.py") == {}
