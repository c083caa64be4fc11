"""The chart's alert rules (templates/prometheusrule.yaml), rendered by real helm and checked by
real ``promtool test rules`` (Debian's prometheus package; .ci/run installs it) against series
shaped like the router's and model servers' metrics."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support.cluster.harness import ROOT, tool

TESTS = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'tinyimg_router_ready_pods{model="down"}', "values": "0x20"},
                {"series": 'tinyimg_router_ready_pods{model="up"}', "values": "1x20"},
                # scaled to zero on purpose (idle, autoscaling): no alert
                {"series": 'tinyimg_router_ready_pods{model="idle"}', "values": "0x20"},
                {"series": 'tinyimg_router_scaled_to_zero{model="idle"}', "values": "1x20"},
                {"series": 'tinyimg_router_scaled_to_zero{model="down"}', "values": "0x20"},
                {"series": 'tinyimg_queue_depth{model="busy",device="cuda:0"}', "values": "20x20"},
                {"series": 'tinyimg_queue_depth{model="up",device="cuda:0"}', "values": "1x20"},
                {"series": 'tinyimg_router_requests_total{model="flaky",outcome="ok"}', "values": "0+10x20"},
                {"series": 'tinyimg_router_requests_total{model="flaky",outcome="upstream_error"}', "values": "0+5x20"},
                {"series": 'tinyimg_router_requests_total{model="up",outcome="ok"}', "values": "0+10x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "TinyimgModelNotReady", "exp_alerts": []},  # not yet 5m
                {"eval_time": "10m", "alertname": "TinyimgModelNotReady", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "model": "down"},
                     "exp_annotations": {"summary": "Model down has no ready pod",
                                         "description": "The router has had no ready, reachable pod for down for 5m: requests for it get 503."}}]},
                {"eval_time": "15m", "alertname": "TinyimgQueueSaturated", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "model": "busy"},
                     "exp_annotations": {"summary": "Model busy queues are saturated",
                                         "description": "A pod of busy has had 16 or more requests waiting for 10m: add replicas or GPUs."}}]},
                {"eval_time": "18m", "alertname": "TinyimgHighErrorRate", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "model": "flaky"},
                     "exp_annotations": {"summary": "Model flaky fails more than 0.05 of its requests",
                                         "description": "Over 5 minutes, 33.33% of the requests for flaky failed in the router or upstream."}}]},
            ],
        }
    ],
}


def test_alert_rules_fire_for_what_they_name_and_nothing_else(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    rendered = subprocess.run(
        [str(tool("helm")), "template", "t", str(ROOT / "charts" / "tinyimg"), "--set", "monitoring.prometheusRule.enabled=true",
         "--show-only", "templates/prometheusrule.yaml"], capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    rule = yaml.safe_load(rendered)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], **TESTS}))
    result = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
