"""What tracing costs: the model server's single-request latency and the router's hop, with the
exporter unset and with it set (OTLP/HTTP to a sink on loopback that answers every export), and,
given ``--baseline PATH`` (the ``server/`` directory of a checkout from before tracing), the same
code paths without any tracing code at all. All variants run at once and are called in turn, one
request each, so the machine's load falls on all of them alike.

Targets (issue 23): unset, the hop and the server's p50 are unchanged within noise (ratio to the
baseline ~1.00); set, the server's p50 is at most 2% above unset.

Run: .venv/bin/python bench/tracing.py [--baseline /tmp/base/server] [--requests N] [--hops N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from harness import OUT_DIR, build_config, build_table, ensure_tiny_model, free_port, progress, wait_http

TARGET_SET_RATIO = 1.02
ROUTER_BENCH = Path(__file__).with_name("router_bench.py")


class Sink:
    """An OTLP/HTTP endpoint that takes every export (and counts the bytes): a collector's cost is
    not the process's."""

    def __init__(self) -> None:
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.bytes += len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def launch(args: list[str], label: str, env: dict[str, str], pythonpath: str | None) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log = OUT_DIR / f"tracing-{label}.log"
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, **env, "OMP_NUM_THREADS": "1"}
    if pythonpath:
        full_env["PYTHONPATH"] = pythonpath
    command = [sys.executable, "-m", "tinyimg", *args, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=full_env)
    return process, f"http://127.0.0.1:{port}", log


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure_in_turn(urls: dict[str, str], path: str, body: dict, rounds: int) -> dict[str, list[float]]:
    """One request to each variant in turn, ``rounds`` times, each variant on its own keep-alive client."""
    clients = {label: httpx.Client(base_url=url, timeout=120) for label, url in urls.items()}
    samples: dict[str, list[float]] = {label: [] for label in urls}
    try:
        for client in clients.values():  # warm: connections, kernels, the exporter's first batch
            for _ in range(3):
                client.post(path, json=body).raise_for_status()
        for index in range(rounds):
            order = list(clients.items())
            order = order[index % len(order):] + order[:index % len(order)]  # no variant always first
            for label, client in order:
                started = time.perf_counter()
                client.post(path, json=body).raise_for_status()
                samples[label].append(time.perf_counter() - started)
            if (index + 1) % max(1, rounds // 5) == 0:
                progress(f"{path}: {index + 1}/{rounds} rounds")
    finally:
        for client in clients.values():
            client.close()
    return samples


def run(baseline: str | None, requests: int, hops: int) -> dict[str, Any]:
    sink = Sink()
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    variants: dict[str, tuple[dict[str, str], str | None]] = {"unset": ({}, None), "set": (traced, None)}
    if baseline:
        variants = {"baseline": ({}, baseline), **variants}
    processes: list[subprocess.Popen] = []
    try:
        # The model server: tiny SDXL, 4 steps at 64x64, one request at a time.
        source = ensure_tiny_model("sdxl")
        config = build_config("tiny-sdxl", "sdxl", source, max_batch=1, wait_ms=0)
        config_path = OUT_DIR / "tracing-config.yaml"
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(config))
        servers = {}
        for label, (env, path) in variants.items():
            process, url, log = launch(["serve", "--config", str(config_path)], f"server-{label}", env, path)
            processes.append(process)
            servers[label] = (url, process, log)
        for url, process, log in servers.values():
            wait_http(f"{url}/health/ready", 300, process, log)
        progress(f"servers ready: {', '.join(servers)}")
        body = {"model": "tiny-sdxl", "prompt": "a benchmark", "seed": 1}
        server_samples = measure_in_turn({k: v[0] for k, v in servers.items()}, "/generate", body, requests)

        # The router hop: router_bench's trivial backend, a router per variant in front of it.
        backend_port = free_port()
        backend = subprocess.Popen([sys.executable, str(ROUTER_BENCH), "--backend", str(backend_port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(backend)
        backend_url = f"http://127.0.0.1:{backend_port}"
        wait_http(f"{backend_url}/status", 30, backend)
        routers = {"direct": backend_url}
        for label, (env, path) in variants.items():
            process, url, log = launch(["router", f"--backend=bench={backend_url}"], f"router-{label}", env, path)
            processes.append(process)
            wait_http(f"{url}/health/ready", 60, process, log)
            routers[label] = url
        hop_samples = measure_in_turn(routers, "/generate", {"model": "bench", "prompt": "a benchmark", "seed": 1}, hops)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        sink.server.shutdown()
    server_p50 = {label: p50_ms(s) for label, s in server_samples.items()}
    direct = p50_ms(hop_samples.pop("direct"))
    hop_p50 = {label: p50_ms(s) - direct for label, s in hop_samples.items()}
    results: dict[str, Any] = {"requests": requests, "hops": hops, "server_p50_ms": server_p50, "direct_p50_ms": direct,
                               "hop_p50_ms": hop_p50, "exported_bytes": sink.bytes,
                               "set_over_unset": server_p50["set"] / server_p50["unset"]}
    if baseline:
        results["unset_over_baseline"] = server_p50["unset"] / server_p50["baseline"]
        results["hop_unset_minus_baseline_ms"] = hop_p50["unset"] - hop_p50["baseline"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="the server/ directory of a checkout from before tracing")
    parser.add_argument("--requests", type=int, default=60, help="rounds of generation requests (one per variant)")
    parser.add_argument("--hops", type=int, default=1500, help="rounds of router requests (one per variant)")
    args = parser.parse_args(argv)
    results = run(args.baseline, args.requests, args.hops)
    (OUT_DIR / "tracing-latest.json").write_text(json.dumps(results, indent=2))
    rows = [(label, f"{results['server_p50_ms'][label]:.2f}", f"{results['hop_p50_ms'][label]:.3f}")
            for label in results["server_p50_ms"]]
    print(build_table(rows, ("tracing", "server p50 (ms)", "router hop p50 (ms)")))
    print(f"set / unset server p50: {results['set_over_unset']:.3f} (target <= {TARGET_SET_RATIO})")
    if "unset_over_baseline" in results:
        print(f"unset / baseline server p50: {results['unset_over_baseline']:.3f}; "
              f"hop unset - baseline: {results['hop_unset_minus_baseline_ms']:+.3f} ms")
    print(f"exported: {results['exported_bytes']} bytes of OTLP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
