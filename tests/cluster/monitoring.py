"""A real Prometheus (Debian's ``prometheus``) scraping the emulated cluster's pods the way the
chart's PodMonitor selects them, and the dashboard's queries made concrete (pure helpers + one
process)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.kube.selectors import label_selector_string, match_label_selector

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "tinyimg" / "dashboards" / "tinyimg.json"


def pod_monitor_selector(pod_monitor: dict[str, Any]) -> str:
    """A PodMonitor's ``selector`` as a label-selector string."""
    return label_selector_string(pod_monitor["spec"]["selector"])


def scrape_config(pod_monitor: dict[str, Any], pods: list[dict[str, Any]], interval: str = "1s") -> dict[str, Any]:
    """What the Prometheus Operator makes of a PodMonitor: one target per selected running pod,
    labelled with its namespace and pod name (the dashboard filters on ``namespace``)."""
    selector = pod_monitor_selector(pod_monitor)
    endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    targets = []
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or pod["metadata"].get("deletionTimestamp") or not match_label_selector(labels, selector):
            continue
        ports = {p.get("name"): p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []}
        targets.append({"targets": [f"{ip}:{ports[endpoint['port']]}"],
                        "labels": {"namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"]}})
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": "podmonitor", "metrics_path": endpoint.get("path", "/metrics"),
                                "static_configs": targets}]}


def dashboard_queries(rate_interval: str = "30s") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, variables at their "All" values."""
    board = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets") or []:
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            expr = re.sub(r"\$\{?(namespace|model|tenant)\}?", ".*", expr)
            queries.append((panel["title"], expr))
    return queries


@contextlib.contextmanager
def running_prometheus(config: dict[str, Any], workdir: Path, address: str,
                       preexec: Callable[[], None] | None = None) -> Iterator[str]:
    binary = shutil.which("prometheus")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address={address}:9090"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=preexec)
    url = f"http://{address}:9090"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]
