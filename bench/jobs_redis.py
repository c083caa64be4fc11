"""The jobs API's shared-queue path (Redis) beside its in-process path, in one run.

Two ``tinyimg serve`` processes with the same tiny Flux model and the same directory result store:
one runs jobs in-process (no ``jobs.redisUrl``), the other puts them on a Redis stream that its own
worker takes them from (``jobs.redisUrl``; a real ``redis-server`` started here). 8 clients each
create a job (``POST /v1/jobs``) and follow its event stream until it ends; per job, the client's
wall time from POST to the terminal event. The two paths run in alternating rounds (so drift in
the machine's load hits both); the figures are the difference of the medians (what the Redis path
adds per job), jobs per second, and the CPU time per job of the server (plus redis-server) read
from /proc. With 8 clients the 2 cores are saturated, so any extra CPU per job shows up as
queueing; a second phase with one client measures the path's own added latency. Target
(issue 19): the Redis path costs at most 5 ms per job at p50 on this machine.

    .venv/bin/python bench/jobs_redis.py [--rounds 3] [--jobs-per-client 15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import OUT_DIR, build_config, ensure_tiny_model, free_port, progress, start_server

CLIENTS = 8
TERMINAL = ("succeeded", "failed", "cancelled")


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


def one_job(client: httpx.Client, url: str, seed: int) -> float:
    """POST a job, then read its event stream to the end: seconds from POST to the terminal event."""
    start = time.perf_counter()
    created = client.post(f"{url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 1, "seed": seed})
    created.raise_for_status()
    with client.stream("GET", f"{url}/v1/jobs/{created.json()['id']}/events") as events:
        for line in events.iter_lines():
            if line.startswith("event: ") and line[7:] in TERMINAL:
                if line[7:] != "succeeded":
                    raise RuntimeError(f"a job ended {line[7:]}")
                break
    return time.perf_counter() - start


def run_round(url: str, jobs_per_client: int, clients: int = CLIENTS) -> tuple[list[float], float]:
    """(per-job seconds, jobs per second) with ``clients`` clients at once."""
    def client_loop(index: int) -> list[float]:
        with httpx.Client(timeout=60) as client:
            return [one_job(client, url, index * 1000 + i) for i in range(jobs_per_client)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [t for chunk in pool.map(client_loop, range(clients)) for t in chunk]
    return results, len(results) / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs-per-client", type=int, default=15)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (Debian package redis-server)", file=sys.stderr)
        return 2
    source = ensure_tiny_model("flux")
    work = Path(tempfile.mkdtemp(prefix="tinyimg-jobs-bench-"))
    redis, redis_url = start_redis(work)
    servers = {}
    try:
        for path, jobs in (("in-process", {}), ("redis", {"redisUrl": redis_url})):
            config = build_config("tiny-flux", "flux", source, max_batch=4, wait_ms=2)
            config["jobs"] = {"resultStore": {"dir": str(work / f"results-{path}")}, "progressIntervalMs": 1000, **jobs}
            progress(f"starting the {path} server")
            servers[path] = start_server(config, f"jobs-{path}")
        for server in servers.values():  # warm-up: the first calls pay for lazy initialisation
            run_round(server.url, 2)
        samples: dict[str, list[float]] = {path: [] for path in servers}
        rates: dict[str, list[float]] = {path: [] for path in servers}
        medians: dict[str, list[float]] = {path: [] for path in servers}
        cpu: dict[str, float] = dict.fromkeys(servers, 0.0)  # server (+ redis-server) CPU seconds
        for round_index in range(args.rounds):
            for path, server in servers.items():
                progress(f"round {round_index + 1}/{args.rounds}: {path}, {CLIENTS} clients x {args.jobs_per_client} jobs")
                pids = [server.process.pid, *([redis.pid] if path == "redis" else [])]
                before = sum(cpu_seconds(pid) for pid in pids)
                latencies, rate = run_round(server.url, args.jobs_per_client)
                cpu[path] += sum(cpu_seconds(pid) for pid in pids) - before
                samples[path] += latencies
                rates[path].append(rate)
                medians[path].append(statistics.median(latencies))
        alone: dict[str, list[float]] = {path: [] for path in servers}
        for round_index in range(args.rounds):  # one client: the path's own latency, nothing queued
            for path, server in servers.items():
                progress(f"round {round_index + 1}/{args.rounds}: {path}, 1 client x {args.jobs_per_client * 2} jobs")
                alone[path] += run_round(server.url, args.jobs_per_client * 2, clients=1)[0]
    finally:
        for server in servers.values():
            server.stop()
        redis.kill()
        shutil.rmtree(work, ignore_errors=True)
    table = {
        path: {
            "jobs": len(samples[path]),
            "jobs_per_second": round(statistics.median(rates[path]), 2),
            "p50_ms": round(statistics.median(samples[path]) * 1000, 1),
            "p95_ms": round(quantile(samples[path], 0.95) * 1000, 1),
            "round_p50s_ms": [round(m * 1000, 1) for m in medians[path]],
            "cpu_ms_per_job": round(cpu[path] / len(samples[path]) * 1000, 2),
        }
        for path in servers
    }
    added = statistics.median(
        [(r - p) * 1000 for r, p in zip(medians["redis"], medians["in-process"], strict=True)])
    one_client = {path: {"p50_ms": round(statistics.median(v) * 1000, 1), "p95_ms": round(quantile(v, 0.95) * 1000, 1)}
                  for path, v in alone.items()}
    result = {"clients": CLIENTS, "paths": table, "redis_added_p50_ms": round(added, 1), "one_client": one_client,
              "redis_added_p50_ms_one_client": round(one_client["redis"]["p50_ms"] - one_client["in-process"]["p50_ms"], 1),
              "redis_added_cpu_ms_per_job": round(table["redis"]["cpu_ms_per_job"] - table["in-process"]["cpu_ms_per_job"], 2),
              "redis_throughput_ratio": round(table["redis"]["jobs_per_second"] / table["in-process"]["jobs_per_second"], 3)}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"jobs-redis-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
