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
                direct_times.append(time_call(lambda i=i: direct(i)))
                inference_mode_times.append(time_call(lambda i=i: direct_inference_mode(i)))
                http_times.append(time_call(lambda i=i: over_http(i)))
                progress(f"overhead run {i + 1}/{runs}: direct {direct_times[-1]:.3f}s, "
                         f"direct+inference_mode {inference_mode_times[-1]:.3f}s, http {http_times[-1]:.3f}s")
    finally:
        server.stop()
    d, di, h = median(direct_times), median(inference_mode_times), median(http_times)
    return {"direct_median_s": d, "direct_inference_mode_median_s": di, "http_median_s": h, "ratio": h / d,
            "ratio_vs_inference_mode": h / di, "runs": runs, "batch_wait_ms": wait_ms,
            "direct_s": direct_times, "direct_inference_mode_s": inference_mode_times, "http_s": http_times}


async def drive_clients(url: str, model: str, clients: int, per_client: int) -> float:
    """``clients`` concurrent closed-loop clients, ``per_client`` one-image requests each; images/s."""
    import httpx

    body = {"model": model, "prompt": PROMPT, "width": SIZE, "height": SIZE, "steps": STEPS}

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def one_client(c: int) -> None:
            for k in range(per_client):
                r = await client.post("/generate", json={**body, "seed": c * 1000 + k})
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(clients)))
        return clients * per_client / (time.perf_counter() - start)


def bench_batching(family: str, runs: int, clients: int, per_client: int, wait_ms: int) -> dict[str, Any]:
    source, model = ensure_tiny_model(family), f"tiny-{family}"
    modes = {"on": build_config(model, family, source, max_batch=8, wait_ms=wait_ms),
             "off": build_config(model, family, source, max_batch=1, wait_ms=0)}
    servers = {mode: start_server(config, f"batching-{family}-{mode}") for mode, config in modes.items()}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for server in servers.values():  # warm-up round
            asyncio.run(drive_clients(server.url, model, clients, 1))
        for i in range(runs):
            for mode, server in servers.items():
                rates[mode].append(asyncio.run(drive_clients(server.url, model, clients, per_client)))
            progress(f"{family} batching run {i + 1}/{runs}: "
                     f"on {rates['on'][-1]:.2f} img/s, off {rates['off'][-1]:.2f} img/s")
    finally:
        for server in servers.values():
            server.stop()
    on, off = median(rates["on"]), median(rates["off"])
    return {"model": model, "on_images_per_s": on, "off_images_per_s": off, "ratio": on / off, "runs": runs, "clients": clients,
            "requests_per_client": per_client, "batch_wait_ms": wait_ms, "on_runs": rates["on"], "off_runs": rates["off"]}


def bench_pipeline_scaling(family: str, runs: int = 3) -> dict[str, Any]:
    """The bare pipeline's own images/s at batch 1 and 8: the ceiling server batching can reach."""
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(ensure_tiny_model(family)), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    rates = {}
    for batch in (1, 8):
        def call(batch: int = batch) -> None:
            generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
            with torch.inference_mode():
                pipe([PROMPT] * batch, width=SIZE, height=SIZE, num_inference_steps=STEPS, generator=generators)

        call()
        rates[batch] = batch / median([time_call(call) for _ in range(runs)])
    progress(f"bare {family} pipeline: batch 1 {rates[1]:.2f} img/s, batch 8 {rates[8]:.2f} img/s")
    return {"batch1_images_per_s": rates[1], "batch8_images_per_s": rates[8], "ratio": rates[8] / rates[1]}


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
    # Flux's tiny pipeline is ~4x faster: more requests per round keep its rounds long enough to time.
    for family, per_client in (("sdxl", args.per_client), ("flux", args.per_client * 4)):
        progress(f"(b) batching, 8 concurrent clients, tiny {family}")
        results[f"batching_{family}"] = bench_batching(family, args.batch_runs, 8, per_client, wait_ms=50)
        results[f"pipeline_scaling_{family}"] = bench_pipeline_scaling(family)

    a, a2 = results["http_overhead"], results["http_overhead_demo_batching"]
    rows = [
        ("HTTP overhead (batching off)", f"direct {a['direct_median_s']:.3f} s", f"HTTP {a['http_median_s']:.3f} s",
         f"{a['ratio']:.3f}", "<= 1.10", "yes" if a["ratio"] <= 1.10 else "NO"),
        ("HTTP overhead vs direct under inference_mode", f"direct {a['direct_inference_mode_median_s']:.3f} s",
         f"HTTP {a['http_median_s']:.3f} s", f"{a['ratio_vs_inference_mode']:.3f}", "<= 1.10",
         "yes" if a["ratio_vs_inference_mode"] <= 1.10 else "NO"),
        ("HTTP overhead (maxBatchSize 4, 20 ms wait)", f"direct {a2['direct_median_s']:.3f} s",
         f"HTTP {a2['http_median_s']:.3f} s", f"{a2['ratio']:.3f}", "(info)", "-"),
    ]
    for family in ("sdxl", "flux"):
        b = results[f"batching_{family}"]
        rows.append((f"Batching, 8 clients, tiny {family}", f"off {b['off_images_per_s']:.2f} img/s",
                     f"on {b['on_images_per_s']:.2f} img/s", f"{b['ratio']:.2f}x", ">= 1.4x",
                     "yes" if b["ratio"] >= 1.4 else "NO"))
        p = results[f"pipeline_scaling_{family}"]
        rows.append((f"(reference) bare tiny {family} pipeline, batch 8 vs 1", f"{p['batch1_images_per_s']:.2f} img/s",
                     f"{p['batch8_images_per_s']:.2f} img/s", f"{p['ratio']:.2f}x", "ceiling", "-"))
    print(build_table(rows, ("benchmark", "baseline", "measured", "ratio", "target", "met")))
    progress(f"wrote {write_results(results)}")


if __name__ == "__main__":
    main()
