"""This server beside LitServe, on the same tiny pipeline with the same batch limits (`make bench` runs it after `bench/run_cpu.py`).

Both serve the tiny SDXL (then tiny Flux) pipeline, 64x64, 4 steps, float32, on the CPU, batches of up
to 8 images with a 50 ms wait, and answer a PNG in base64 inside JSON. Rounds alternate between the
two servers; each round drives 1, 4, 8 and 16 concurrent clients. Reported per server and level:
images/s and p50/p99 latency (medians over rounds), and where the time went (queue wait, the
pipeline call, image encoding, and the rest: HTTP, JSON, transport between processes). LitServe
decodes a request in its worker after the batch has formed, so its queue wait shows up in "the rest".
While one server is measured, the other is stopped (SIGSTOP), so each has the machine to itself.

LitServe is pinned and installed only for this benchmark, into bench/.peers (not the test venv).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import (
    OUT_DIR,
    REPO_ROOT,
    build_config,
    build_table,
    describe_machine,
    ensure_tiny_model,
    free_port,
    progress,
    start_server,
    wait_http,
    write_results,
)

LITSERVE = "litserve==0.2.19"
PEERS_DIR = REPO_ROOT / "bench" / ".peers"
PROMPT = "a lighthouse on a cliff at dusk"
BODY = {"prompt": PROMPT, "width": 64, "height": 64, "steps": 4, "guidance_scale": 5.0}
LEVELS = (1, 4, 8, 16)


def ensure_litserve() -> Path:
    if not (PEERS_DIR / "litserve").is_dir():
        progress(f"installing {LITSERVE} into {PEERS_DIR} (benchmark only)")
        # fastapi and uvicorn come from the venv; only LitServe and its ZeroMQ binding go here.
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(PEERS_DIR),
                        LITSERVE, "pyzmq==27.3.0"], check=True)
    return PEERS_DIR


class PeerProcess:
    def __init__(self, source: Path, family: str, max_batch: int, wait_ms: int):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = OUT_DIR / f"litserve-{family}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ensure_litserve()), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, str(REPO_ROOT / "bench" / "peer_litserve.py"), "--source", str(source),
                   "--port", str(port), "--max-batch", str(max_batch), "--wait-ms", str(wait_ms)]
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        # Its own process group: LitServe's worker processes outlive a terminated main process.
        self.process = subprocess.Popen(command, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        wait_http(f"{self.url}/health", 300, self.process, self.log_path)

    def pause(self, stopped: bool) -> None:
        os.killpg(self.process.pid, signal.SIGSTOP if stopped else signal.SIGCONT)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of the group is left


async def drive(url: str, model: str, clients: int, per_client: int, seed0: int) -> dict[str, Any]:
    """``clients`` concurrent clients, each sending ``per_client`` requests back to back."""
    import httpx

    latencies: list[float] = []
    parts: dict[str, list[float]] = {"queued": [], "inference": [], "encode_and_rest": []}

    async def one_client(client: httpx.AsyncClient, c: int) -> None:
        for i in range(per_client):
            start = time.perf_counter()
            r = await client.post("/generate", json={**BODY, "model": model, "seed": seed0 + c * 1000 + i})
            elapsed = time.perf_counter() - start
            r.raise_for_status()
            timings = r.json()["timings"]
            latencies.append(elapsed)
            parts["queued"].append(timings["queued_seconds"])
            parts["inference"].append(timings["inference_seconds"])
            parts["encode_and_rest"].append(elapsed - timings["queued_seconds"] - timings["inference_seconds"])

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one_client(client, c) for c in range(clients)))
        wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"images_per_s": len(latencies) / wall, "p50_s": statistics.median(ordered),
            "p99_s": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
            **{f"{k}_median_s": statistics.median(v) for k, v in parts.items()}}


def bench_family(family: str, rounds: int, requests: int) -> dict[str, Any]:
    source, model = ensure_tiny_model(family), f"tiny-{family}"
    progress(f"{family}: starting this server and LitServe (max batch 8, 50 ms wait)")
    ours = start_server(build_config(model, family, source, max_batch=8, wait_ms=50), f"vs-litserve-{family}")
    peer = PeerProcess(source, family, max_batch=8, wait_ms=50)
    servers = {"tinyimg": ours.url, "litserve": peer.url}
    # While one server is measured the other is stopped (SIGSTOP): LitServe's idle worker polls its
    # queue every millisecond (0.79 CPU-seconds per idle 10 s here), which would slow whichever
    # server is measured beside it; this server idles at 0.02.
    pausers = {"tinyimg": lambda stopped: os.kill(ours.process.pid, signal.SIGSTOP if stopped else signal.SIGCONT),
               "litserve": peer.pause}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {n: [] for n in LEVELS} for name in servers}
    try:
        for url in servers.values():  # warm-up: first calls allocate and compile kernels
            asyncio.run(drive(url, model, 4, 2, 0))
        for r in range(rounds):
            for n in LEVELS:
                per_client = max(2, requests // n)
                # Alternate the order each round so drift in machine speed hits both alike.
                order = list(servers.items()) if r % 2 == 0 else list(reversed(servers.items()))
                for name, url in order:
                    others = [pause for other, pause in pausers.items() if other != name]
                    for pause in others:
                        pause(True)
                    try:
                        runs[name][n].append(asyncio.run(drive(url, model, n, per_client, seed0=r * 100_000)))
                    finally:
                        for pause in others:
                            pause(False)
                    last = runs[name][n][-1]
                    progress(f"{family} round {r + 1}, {n} clients, {name}: {last['images_per_s']:.2f} img/s, "
                             f"p50 {last['p50_s'] * 1000:.0f} ms")
            summary = ", ".join(f"{n} clients {runs['tinyimg'][n][-1]['images_per_s']:.2f} vs "
                                f"{runs['litserve'][n][-1]['images_per_s']:.2f} img/s" for n in LEVELS)
            progress(f"{family} round {r + 1}/{rounds} (tinyimg vs litserve): {summary}")
    finally:
        ours.stop()
        peer.stop()
    return {name: {n: {key: statistics.median(run[key] for run in level) for key in level[0]}
                   for n, level in by_level.items()} for name, by_level in runs.items()} | {"raw": runs}


def build_rows(family: str, result: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for n in LEVELS:
        ours, peer = result["tinyimg"][n], result["litserve"][n]
        ratio = ours["images_per_s"] / peer["images_per_s"]
        target = ">= 1.10" if n >= 8 else ("p50 <=" if n == 1 else "(info)")
        met = ("yes" if ratio >= 1.10 else "NO") if n >= 8 else (
            ("yes" if ours["p50_s"] <= peer["p50_s"] else "NO") if n == 1 else "-")
        rows.append((f"tiny {family}, {n} clients", f"{peer['images_per_s']:.2f} img/s, p50 {peer['p50_s'] * 1000:.0f} ms, "
                     f"p99 {peer['p99_s'] * 1000:.0f} ms", f"{ours['images_per_s']:.2f} img/s, p50 "
                     f"{ours['p50_s'] * 1000:.0f} ms, p99 {ours['p99_s'] * 1000:.0f} ms", f"{ratio:.2f}x", target, met))
    return rows


def build_breakdown_rows(family: str, result: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for name in ("tinyimg", "litserve"):
        for n in LEVELS:
            r = result[name][n]
            rows.append((f"{family}", name, str(n), f"{r['queued_median_s'] * 1000:.0f}", f"{r['inference_median_s'] * 1000:.0f}",
                         f"{r['encode_and_rest_median_s'] * 1000:.0f}", f"{r['p50_s'] * 1000:.0f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=32, help="requests per level per round (at least 2 per client)")
    parser.add_argument("--families", default="sdxl,flux")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": describe_machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rows, breakdown = [], []
    for family in args.families.split(","):
        results[family] = bench_family(family, args.rounds, args.requests)
        write_results({"vs_litserve": results})  # after each family: a long run killed later keeps what it measured
        rows += build_rows(family, results[family])
        breakdown += build_breakdown_rows(family, results[family])
    print(build_table(rows, ("setup", "LitServe", "tinyimg", "ratio (img/s)", "target", "met")))
    print()
    print(build_table(breakdown, ("family", "server", "clients", "queued ms", "pipeline ms", "encode + HTTP ms", "p50 ms")))
    progress(f"wrote {write_results({'vs_litserve': results})}")


if __name__ == "__main__":
    main()
