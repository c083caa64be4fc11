"""Router benchmark: latency the router hop adds (p50, p99) and router requests/second.

A trivial backend (a bare ASGI app on uvicorn, answering /generate at once) runs in its own
process, the router (`tinyimg router`) in another, the client here. Latency: sequential requests
on one keep-alive connection, first straight to the backend, then through the router; the
difference of the percentiles is what the hop costs. Throughput: many concurrent clients through
the router. Run: .venv/bin/python bench/router_bench.py [--requests N] [--concurrency C]

To compare two router builds in one run (the machine's load changes by the minute), alternate
them with PYTHONPATH: ``PYTHONPATH=<checkout>/server .venv/bin/python bench/router_bench.py``.
Targets (issue 12): the hop adds at most 0.7 ms at p50, and 32 clients through the router get at
least 70% of the requests per second they get straight from the backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from harness import free_port, wait_http

TARGET_ADDED_P50_MS = 0.7
TARGET_THROUGHPUT_RATIO = 0.7
BODY = {"model": "bench", "prompt": "a benchmark", "seed": 1}


# -- the trivial backend (run in a child process: `router_bench.py --backend PORT`) ----------------
ANSWER = json.dumps({"model": "bench", "images": [{"b64": "AAAA", "seed": 1}]}).encode()
# /status and /models as a model server answers them (tinyimg.wire.contract: the router reads them strictly).
STATUS = json.dumps({"uptime_seconds": 1.0, "devices": [],
                     "models": {"bench": {"queue_depth": 0, "in_flight": 0, "served": 0, "failed": 0}}}).encode()
MODELS = json.dumps({"models": [{"name": "bench", "family": "flux", "source": None, "state": "ready"}]}).encode()


async def trivial_backend(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = {"/status": STATUS, "/models": MODELS}.get(scope["path"], ANSWER)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


# -- the harness ----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (Linux /proc): what the router spends, whatever else
    runs on the machine. Wall-clock figures move with the machine's load; this moves far less."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_latency(url: str, n: int) -> list[float]:
    """Milliseconds per request, sequential on one keep-alive connection (after a warm-up)."""
    with httpx.Client(timeout=10) as client:
        for _ in range(min(200, n)):
            client.post(url + "/generate", json=BODY)
        out = []
        for _ in range(n):
            start = time.perf_counter()
            response = client.post(url + "/generate", json=BODY)
            out.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.text
    return out


async def measure_throughput(url: str, n: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        remaining = iter(range(n))

        async def worker() -> None:
            for _ in remaining:
                response = await client.post(url + "/generate", json=BODY)
                assert response.status_code == 200, response.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up round
        remaining = iter(range(n))
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per latency run")
    parser.add_argument("--throughput-requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backend:
        import uvicorn

        uvicorn.run(trivial_backend, host="127.0.0.1", port=args.backend, log_level="warning", access_log=False)
        return 0

    backend_port, router_port = free_port(), free_port()
    backend_url, router_url = f"http://127.0.0.1:{backend_port}", f"http://127.0.0.1:{router_port}"
    tinyimg = str(Path(sys.executable).with_name("tinyimg"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--backend", str(backend_port)], env=env),
        subprocess.Popen(
            [tinyimg, "router", "--backend", f"bench={backend_url}", "--port", str(router_port), "--log-level", os.environ.get("ROUTER_LOG_LEVEL", "warning")],
            env=env,
        ),
    ]
    try:
        wait_http(backend_url + "/status")
        wait_http(router_url + "/health/ready")
        direct = measure_latency(backend_url, args.requests)
        routed = measure_latency(router_url, args.requests)
        rps_direct = asyncio.run(measure_throughput(backend_url, args.throughput_requests, args.concurrency))
        cpu_before = cpu_seconds(procs[1].pid)
        rps_routed = asyncio.run(measure_throughput(router_url, args.throughput_requests, args.concurrency))
        # Warm-up round and measured round both went through the router.
        router_cpu_us = (cpu_seconds(procs[1].pid) - cpu_before) / (2 * args.throughput_requests) * 1e6
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)

    d50, d99, r50, r99 = (percentile(direct, 0.5), percentile(direct, 0.99), percentile(routed, 0.5), percentile(routed, 0.99))
    added50 = r50 - d50
    print(f"cpu cores: {os.cpu_count()}, python {sys.version.split()[0]}, {args.requests} sequential requests each")
    print(f"direct to backend   p50 {d50:6.2f} ms   p99 {d99:6.2f} ms   mean {statistics.mean(direct):6.2f} ms")
    print(f"through the router  p50 {r50:6.2f} ms   p99 {r99:6.2f} ms   mean {statistics.mean(routed):6.2f} ms")
    print(f"added by the hop    p50 {added50:6.2f} ms   p99 {r99 - d99:6.2f} ms   (target p50 <= {TARGET_ADDED_P50_MS} ms)")
    print(f"router CPU time per forwarded request (user + system): {router_cpu_us:6.0f} us")
    ratio = rps_routed / rps_direct
    print(
        f"throughput, {args.concurrency} concurrent clients: direct {rps_direct:7.0f} req/s, router {rps_routed:7.0f} req/s"
        f" ({ratio:.0%} of direct; target >= {TARGET_THROUGHPUT_RATIO:.0%})"
    )
    return 0 if added50 <= TARGET_ADDED_P50_MS and ratio >= TARGET_THROUGHPUT_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
