"""One tenant's flood beside another tenant's single requests: the fair queue against arrival order,
in one run.

Two ``tinyimg serve`` processes with the same tiny Flux model (batches of one) and the same tenants
keys file (A: ``flooder``, B: ``webapp``, both ``standard``): one as shipped (priority classes, then
deficit round robin across tenants), one with the queue's head chosen in arrival order, as before
tenants (the baseline: the same code with ``JobQueue.head`` replaced by "the oldest waiting", in
that process only). For each: B's single ``/generate`` requests on the idle server, then A sends 60
jobs at once and B sends the same requests while A's backlog waits. Figures: B's p50/p95 idle and
flooded, and the flooded/idle ratio (target, issue 20: p95 at most 2x idle).

    .venv/bin/python bench/tenants_flood.py [--samples 10] [--flood 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import OUT_DIR, build_config, ensure_tiny_model, free_port, progress, wait_http

TENANTS = {"tenants": [
    {"name": "flooder", "priority": "standard", "keys": ["key-a"]},
    {"name": "webapp", "priority": "standard", "keys": ["key-b"]},
]}
A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
SINGLE = {"model": "tiny-flux", "prompt": "a lighthouse", "width": 128, "height": 128, "steps": 8}
FLOOD_JOB = {"model": "tiny-flux", "prompt": "a product shot", "width": 128, "height": 128, "steps": 8}
# The baseline's queue: the oldest waiting request heads the next batch (what the engine did before tenants).
ARRIVAL_ORDER = (
    "import sys; import tinyimg.runtime.jobqueue as q; "
    "q.JobQueue.head = lambda self, jobs: jobs[0] if jobs else None; "
    "from tinyimg.cli import main; sys.exit(main(sys.argv[1:]))"
)


def start(label: str, config: Path, arrival_order: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = OUT_DIR / f"server-tenants-{label}.log"
    args = ["serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
    command = [sys.executable, "-c", ARRIVAL_ORDER, *args] if arrival_order else [sys.executable, "-m", "tinyimg", *args]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/ready", 300, process, log)
    return process, url


def timed(client: httpx.Client, url: str) -> float:
    start_at = time.perf_counter()
    client.post(f"{url}/generate", json=SINGLE, headers=B).raise_for_status()
    return time.perf_counter() - start_at


def wait_idle(client: httpx.Client, url: str) -> None:
    while any(m["queue_depth"] or m["in_flight"] for m in client.get(f"{url}/status").json()["models"].values()):
        time.sleep(0.1)


def measure(url: str, samples: int, flood: int) -> dict[str, list[float]]:
    with httpx.Client(timeout=600) as client:
        timed(client, url)
        idle = [timed(client, url) for _ in range(samples)]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: client.post(f"{url}/v1/jobs", json={**FLOOD_JOB, "seed": i}, headers=A).status_code,
                                  range(flood)))
        assert codes == [202] * flood, codes
        flooded = [timed(client, url) for _ in range(samples)]
        left = client.get(f"{url}/status").json()["tenants"]["flooder"]["queued"]
        wait_idle(client, url)
    return {"idle": idle, "flooded": flooded, "flood_left_waiting": [left]}


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--flood", type=int, default=60)
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    keys = OUT_DIR / "tenants.yaml"
    keys.write_text(yaml.safe_dump(TENANTS))
    config = build_config("tiny-flux", "flux", ensure_tiny_model("flux"), max_batch=1, wait_ms=0, queue=256)
    config["apiKeysFile"] = str(keys)
    path = OUT_DIR / "config-tenants.yaml"
    path.write_text(yaml.safe_dump(config))
    results = {}
    for label, arrival in (("arrival order (before)", True), ("fair queue (after)", False)):
        progress(f"{label}: starting the server")
        process, url = start("fifo" if arrival else "fair", path, arrival)
        try:
            progress(f"{label}: {args.samples} idle requests, then {args.flood} jobs from A and {args.samples} requests from B")
            results[label] = measure(url, args.samples, args.flood)
        finally:
            process.terminate()
            process.wait(60)
    print("| queue | B idle p50 | B idle p95 | B flooded p50 | B flooded p95 | p95 flooded/idle | A's jobs still waiting after B |")
    print("|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {statistics.median(r['idle']):.3f} s | {p95(r['idle']):.3f} s | "
              f"{statistics.median(r['flooded']):.3f} s | {p95(r['flooded']):.3f} s | "
              f"{p95(r['flooded']) / p95(r['idle']):.2f}x | {r['flood_left_waiting'][0]} |")
    (OUT_DIR / "tenants-flood.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
