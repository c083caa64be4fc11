"""CPU benchmarks of the model server (`make bench`), with the tiny demo pipelines:

(a) HTTP overhead: tiny SDXL, 64x64, 4 steps, one image, sequential: the bare diffusers pipeline
    (loaded with from_pretrained) called in Python vs POST /generate on a real uvicorn. Target <= 1.10.
(b) Batching: 8 concurrent clients, batching on (maxBatchSize 8) vs off (maxBatchSize 1),
    images per second. Target >= 1.4x.

Both sides of each ratio run in this one process and run, interleaved where they can be. Prints
progress and a markdown table; writes JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from harness import (
    build_config,
    build_table,
    describe_machine,
    ensure_tiny_model,
    median,
    progress,
    start_server,
    time_call,
    write_results,
)

PROMPT = "a lighthouse on a cliff at dusk"
SIZE, STEPS, GUIDANCE = 64, 4, 5.0


def bench_http_overhead(runs: int, wait_ms: int) -> dict[str, Any]:
    import httpx
    import torch
    from diffusers import DiffusionPipeline

    source = ensure_tiny_model("sdxl")
    pipe = DiffusionPipeline.from_pretrained(str(source), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def direct(seed: int) -> None:
        generator = torch.Generator("cpu").manual_seed(seed)
        pipe(PROMPT, width=SIZE, height=SIZE, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generator)

    def direct_inference_mode(seed: int) -> None:
        # What the server's handler does around its pipeline call; separates HTTP cost from this.
        with torch.inference_mode():
            direct(seed)

    config = build_config("tiny-sdxl", "sdxl", source, max_batch=1 if wait_ms == 0 else 4, wait_ms=wait_ms)
    server = start_server(config, f"overhead-wait{wait_ms}")
    body = {"model": "tiny-sdxl", "prompt": PROMPT, "width": SIZE, "height": SIZE, "steps": STEPS, "guidance_scale": GUIDANCE}
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:

            def over_http(seed: int) -> None:
                r = client.post("/generate", json={**body, "seed": seed})
                r.raise_for_status()

            for seed in range(2):  # warm every path
                direct(seed)
                direct_inference_mode(seed)
                over_http(seed)
            direct_times, inference_mode_times, http_times = [], [], []
            for i in range(runs):  # interleaved, so drift in machine speed hits all sides alike
                direct_times.append(time_call(lambda: direct(i)))
                inference_mode_times.append(time_call(lambda: direct_inference_mode(i)))
                http_times.append(time_call(lambda: over_http(i)))
                progress(f"overhead run {i + 1}/{runs}: direct {direct_times[-1]:.3f}s, "
                         f"direct+inference_mode {inference_mode_times[-1]:.3f}s, http {http_times[-1]:.3f}s")
    finally:
        server.stop()
    d, di, h = median(direct_times), median(inference_mode_times), median(http_times)
    return {"direct_median_s": d, "direct_inference_mode_median_s": di, "http_median_s": h, "ratio": h / d,
            "ratio_vs_inference_mode": h / di, "runs": runs, "batch_wait_ms": wait_ms,
            "direct_s": direct_times, "direct_inference_mode_s": inference_mode_times, "http_s": http_times}


async def drive_clients(url: str, clients: int, per_client: int) -> float:
    """``clients`` concurrent closed-loop clients, ``per_client`` one-image requests each; images/s."""
    import httpx

    body = {"model": "tiny-sdxl", "prompt": PROMPT, "width": SIZE, "height": SIZE, "steps": STEPS}

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def one_client(c: int) -> None:
            for k in range(per_client):
                r = await client.post("/generate", json={**body, "seed": c * 1000 + k})
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(clients)))
        return clients * per_client / (time.perf_counter() - start)


def bench_batching(runs: int, clients: int, per_client: int, wait_ms: int) -> dict[str, Any]:
    source = ensure_tiny_model("sdxl")
    modes = {"on": build_config("tiny-sdxl", "sdxl", source, max_batch=8, wait_ms=wait_ms),
             "off": build_config("tiny-sdxl", "sdxl", source, max_batch=1, wait_ms=0)}
    servers = {mode: start_server(config, f"batching-{mode}") for mode, config in modes.items()}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for mode, server in servers.items():  # warm-up round
            asyncio.run(drive_clients(server.url, clients, 1))
        for i in range(runs):
            for mode, server in servers.items():
                rates[mode].append(asyncio.run(drive_clients(server.url, clients, per_client)))
            progress(f"batching run {i + 1}/{runs}: on {rates['on'][-1]:.2f} img/s, off {rates['off'][-1]:.2f} img/s")
    finally:
        for server in servers.values():
            server.stop()
    on, off = median(rates["on"]), median(rates["off"])
    return {"on_images_per_s": on, "off_images_per_s": off, "ratio": on / off, "runs": runs, "clients": clients,
            "requests_per_client": per_client, "batch_wait_ms": wait_ms, "on_runs": rates["on"], "off_runs": rates["off"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs for the overhead benchmark")
    parser.add_argument("--batch-runs", type=int, default=3, help="timed rounds for the batching benchmark")
    parser.add_argument("--per-client", type=int, default=4, help="requests per client per round")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": describe_machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    progress(f"machine: {results['machine']}")
    progress("(a) HTTP overhead, batching off (maxBatchSize 1)")
    results["http_overhead"] = bench_http_overhead(args.runs, wait_ms=0)
    progress("(a') HTTP overhead with the demo's batching (maxBatchSize 4, 20 ms wait)")
    results["http_overhead_demo_batching"] = bench_http_overhead(args.runs, wait_ms=20)
    progress("(b) batching, 8 concurrent clients")
    results["batching"] = bench_batching(args.batch_runs, 8, args.per_client, wait_ms=50)

    a, a2, b = results["http_overhead"], results["http_overhead_demo_batching"], results["batching"]
    rows = [
        ("HTTP overhead (batching off)", f"direct {a['direct_median_s']:.3f} s", f"HTTP {a['http_median_s']:.3f} s",
         f"{a['ratio']:.3f}", "<= 1.10", "yes" if a["ratio"] <= 1.10 else "NO"),
        ("HTTP overhead vs direct under inference_mode", f"direct {a['direct_inference_mode_median_s']:.3f} s",
         f"HTTP {a['http_median_s']:.3f} s", f"{a['ratio_vs_inference_mode']:.3f}", "<= 1.10",
         "yes" if a["ratio_vs_inference_mode"] <= 1.10 else "NO"),
        ("HTTP overhead (maxBatchSize 4, 20 ms wait)", f"direct {a2['direct_median_s']:.3f} s",
         f"HTTP {a2['http_median_s']:.3f} s", f"{a2['ratio']:.3f}", "(info)", "-"),
        ("Batching, 8 clients", f"off {b['off_images_per_s']:.2f} img/s", f"on {b['on_images_per_s']:.2f} img/s",
         f"{b['ratio']:.2f}x", ">= 1.4x", "yes" if b["ratio"] >= 1.4 else "NO"),
    ]
    print(build_table(rows, ("benchmark", "baseline", "measured", "ratio", "target", "met")))
    progress(f"wrote {write_results(results)}")


if __name__ == "__main__":
    main()
