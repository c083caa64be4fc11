"""GPU benchmark (`make bench-gpu`): full-size SDXL, FLUX.1-schnell and FLUX.1-dev with random
weights, the bare diffusers pipeline against this server with each acceleration tier, in one run.

The architectures come from the published configs (each family file's ``build_full``, in
tinyimg.families) with random weights, so nothing is downloaded; a random-weight model runs the
same kernels on the same shapes as the real one, so its timings and memory are the real model's
(quality figures are not: random weights make noise, and the warm-up's PSNR compares noise).
Tokenizers are the tiny offline ones from tinyimg.tiny: the text encoders still see full-length
sequences (77 CLIP tokens, 256 T5 tokens).

Per model, a fresh pipeline per tier. The baseline is the bare pipeline, eager bf16, called
directly. Each tier then serves the pipeline through the real server (create_app + uvicorn on
loopback, in this process): its warm-up applies the tier (runtime.acceleration), compiles and
measures; then the same accelerated pipeline is timed called directly ("bare") and through
``POST /generate`` ("server"), at each batch size. Recorded per row: latency p50 (median of
--runs), images/s, peak GPU memory, and per tier the compile phase, the cold start to the first
image (server start to the first answer, the pipeline already in memory: warm-up and compile) and
the warm-up's quality figure. It prints a markdown table and writes JSON and the table to bench/out/.

    make bench-gpu                                  # on one H100/H200: the default plan, < 8 minutes
    python bench/gpu_bench.py --tiny --device cpu   # the same code path with tiny models, in seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"
PROMPT = "an astronaut riding a horse on the moon, highly detailed"  # fits the tiny T5's 64 tokens
TINY_STEPS = 4

# runtime.acceleration of each tier (every field set: the device's defaults play no part).
PLAIN = {"compile": "none", "fuseQkv": False, "channelsLast": False}
LOSSLESS = {"compile": "regional", "fuseQkv": True, "channelsLast": True}
TIERS: dict[str, dict[str, Any]] = {
    "eager": PLAIN,
    "fused": {**PLAIN, "fuseQkv": True, "channelsLast": True},  # the lossless tier without compile
    "lossless": LOSSLESS,
    "int8": {**LOSSLESS, "quantize": "int8"},
    "fp8": {**LOSSLESS, "quantize": "fp8"},
    "step-cache": {**LOSSLESS, "stepCache": {"mode": "first-block", "threshold": 0.08}},
}


@dataclass(frozen=True)
class Case:
    """A benchmarked model: a family's full-size architecture and its published request."""

    family: str
    steps: int
    guidance: float | None = None  # None: the family's default
    batches: tuple[int, ...] = (1, 4)  # the largest is the most the plan runs it at
    build: dict[str, Any] = field(default_factory=dict)  # extra build_full arguments


CASES = {
    "sdxl": Case("sdxl", 30),
    "flux-schnell": Case("flux", 4),
    "flux-dev": Case("flux", 28, guidance=3.5, batches=(1,), build={"guidance_embeds": True}),
}


@dataclass
class Row:
    model: str
    tier: str
    batch: int
    path: str  # bare | server
    median_seconds: float
    seconds: list[float]
    images_per_second: float
    peak_memory_gb: float | None


@dataclass
class TierReport:
    model: str
    tier: str
    compile_seconds: float | None
    cold_start_seconds: float  # server start -> first image (warm-up and compile; weights already in memory)
    quality: float | None  # the warm-up's PSNR (dB) against the plain pipeline
    seconds_per_image: float | None


def benchmarked_cases() -> dict[str, Case]:
    """The published models, and every registered family that declares a full-size builder (by key,
    at its default steps)."""
    from tinyimg.families import FAMILIES

    own = {key: Case(key, family.default_steps) for key, family in FAMILIES.items() if family.build_full is not None}
    return {**own, **CASES}


def build_pipeline(case: Case, tiny: bool, device: str, dtype: Any) -> Any:
    import torch

    from tinyimg.families import family_info

    torch.manual_seed(0)
    declared = family_info(case.family)
    assert declared.build_full is not None  # benchmarked_cases() keeps only these
    pipe = declared.build_tiny().to(device, dtype) if tiny else declared.build_full(device, dtype, **case.build)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- measuring ---------------------------------------------------------------------------------
def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(run: Callable[[], None], device: str, warmup: int, runs: int) -> tuple[list[float], float | None]:
    """Seconds of each timed run, and peak GPU memory (GB) over them."""
    import torch

    for _ in range(warmup):
        run()
    cuda = device.startswith("cuda")
    if cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 1024**3 if cuda else None
    return seconds, peak


def bare_call(handler: Any, batch: int, size: int, steps: int, guidance: float) -> Callable[[], None]:
    """The handler's pipeline called directly with a list of prompts, with the call arguments the
    family's own handler adds (guidance, Flux's sequence length)."""
    import torch

    from tinyimg.families.base import GenerationParams

    pipe = handler.pipe
    extra = handler.call_arguments(GenerationParams(PROMPT, None, size, size, steps, guidance, tuple(range(batch))))

    def run() -> None:
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(batch)]
        with torch.inference_mode():
            pipe(prompt=[PROMPT] * batch, width=size, height=size, num_inference_steps=steps,
                 generator=generators, output_type="pil", **extra)

    return run


def build_bench_config(case: Case, name: str, device_kind: str, size: int, steps: int, batches: list[int],
                       dtype: str, acceleration: dict[str, Any]) -> Any:
    from tinyimg.spec import parse_config

    biggest = max(batches)
    defaults: dict[str, Any] = {"steps": steps, "width": size, "height": size}
    if case.guidance is not None:
        defaults["guidanceScale"] = case.guidance
    model = {
        "name": name,
        "family": case.family,
        "source": f"bench/{name}-random-weights",  # never loaded: the handler is handed the pipeline
        "dtype": dtype,
        "defaults": defaults,
        "limits": {"maxWidth": size, "maxHeight": size, "maxSteps": steps, "maxImages": biggest},
        "runtime": {"device": device_kind, "cpuFallback": device_kind == "cpu", "maxBatchSize": biggest,
                    "maxBatchWaitMs": 0, "memoryGb": 1, "requestTimeoutSeconds": 3600,
                    "acceleration": {**acceleration, "minQuality": 0},  # random weights: the PSNR is noise's
                    "warmupShapes": [{"width": size, "height": size, "batch": b} for b in batches]},
        "resources": {"gpus": 1 if device_kind == "cuda" else 0},
    }
    return parse_config({"models": [model]}, "<gpu_bench>")


class PrebuiltHandlers:
    """The server's own handler for the family, handed the already-built pipeline instead of loading
    it; keeps the handler so the bare path calls the same (accelerated) pipeline."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.handler: Any = None

    def __call__(self, spec: Any) -> Any:
        from tinyimg.families import load_handler_class
        from tinyimg.families.acceleration import resolve_acceleration

        handler = load_handler_class(spec.family)(spec)

        def load(device: str, offload: str = "none") -> None:
            handler.pipe, handler.device, handler.offload = self.pipe, device, offload
            handler.acceleration = resolve_acceleration(spec, device.split(":")[0])

        handler.load = load
        self.handler = handler
        return handler


@contextlib.contextmanager
def serving(config: Any, handlers: PrebuiltHandlers) -> Iterator[tuple[Any, float]]:
    """The server on loopback, and its cold start: seconds from its start to its first image."""
    import httpx

    from tinyimg.api.app import create_app
    from tinyimg.serve import BackgroundServer

    started = time.perf_counter()
    app = create_app(config, engine_options={"handler_factory": handlers})
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=3600) as client:
        deadline = time.monotonic() + 1800
        while client.get("/health/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready: {client.get('/health/ready').text}")
            time.sleep(0.05)
        model = config.models[0].name
        client.post("/generate", json={"model": model, "prompt": PROMPT, "output_format": "png"}).raise_for_status()
        yield client, time.perf_counter() - started


def server_call(client: Any, model: str, batch: int, size: int, steps: int) -> Callable[[], None]:
    body = {"model": model, "prompt": PROMPT, "width": size, "height": size, "steps": steps, "seed": 0,
            "num_images": batch, "output_format": "png"}

    def run() -> None:
        response = client.post("/generate", json=body)
        response.raise_for_status()

    return run


def bench_tier(name: str, case: Case, tier: str, args: argparse.Namespace) -> tuple[list[Row], TierReport]:
    import torch

    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    steps = args.steps or (TINY_STEPS if args.tiny else case.steps)
    batches = [b for b in args.batches if b <= max(case.batches)] or [min(args.batches)]
    handlers = PrebuiltHandlers(build_pipeline(case, args.tiny, args.device, dtype))
    config = build_bench_config(case, f"bench-{name}", args.device.split(":")[0], args.size, steps, batches,
                                "float32" if dtype == torch.float32 else "bfloat16", TIERS[tier])
    guidance = config.models[0].resolved_defaults().guidance_scale
    rows = []
    with serving(config, handlers) as (client, cold_start):
        status = client.get("/status").json()["models"][config.models[0].name]
        measured = status.get("acceleration") or {}
        report = TierReport(name, tier, status["startup"].get("compile"), round(cold_start, 3),
                            measured.get("quality"), measured.get("seconds_per_image"))
        print(f"{name} {tier}: cold start {cold_start:.1f}s, startup {status['startup']}", flush=True)
        for batch in batches:
            paths = {"bare": bare_call(handlers.handler, batch, args.size, steps, guidance),
                     "server": server_call(client, config.models[0].name, batch, args.size, steps)}
            for path, run in paths.items():
                seconds, peak = measure(run, args.device, args.warmup, args.runs)
                median = statistics.median(seconds)
                rows.append(Row(name, tier, batch, path, median, seconds, batch / median, peak))
                print(f"{name} {tier} batch={batch} {path}: {median:.3f}s", flush=True)
    handlers.pipe = handlers.handler = None
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows, report


# --- reporting ---------------------------------------------------------------------------------
def build_table(rows: list[Row], reports: list[TierReport]) -> str:
    """One line per model, tier and batch: bare and server latency, the server's overhead, the
    speed-up over the eager bare pipeline at that batch, images/s, memory, compile, cold start, quality."""
    lines = ["| model | tier | batch | bare s | server s | server/bare | speed-up vs eager | images/s (server)"
             " | peak GPU GB | compile s | cold start s | PSNR dB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keyed = {(r.model, r.tier, r.batch, r.path): r for r in rows}
    tiers = {(t.model, t.tier): t for t in reports}
    for (model, tier, batch, path), bare in keyed.items():
        if path != "bare":
            continue
        served = keyed.get((model, tier, batch, "server"))
        baseline = keyed.get((model, "eager", batch, "bare"))
        info = tiers.get((model, tier))
        peak = max((r.peak_memory_gb for r in (bare, served) if r and r.peak_memory_gb is not None), default=None)
        cells = [model, tier, str(batch), f"{bare.median_seconds:.3f}",
                 f"{served.median_seconds:.3f}" if served else "-",
                 f"{served.median_seconds / bare.median_seconds:.3f}" if served else "-",
                 f"{baseline.median_seconds / served.median_seconds:.2f}x" if served and baseline else "-",
                 f"{served.images_per_second:.2f}" if served else "-",
                 "-" if peak is None else f"{peak:.1f}",
                 "-" if info is None or info.compile_seconds is None else f"{info.compile_seconds:.1f}",
                 "-" if info is None else f"{info.cold_start_seconds:.1f}",
                 "-" if info is None or info.quality is None else f"{info.quality:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models (checks the script, no GPU needed)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--models", default="sdxl,flux-schnell,flux-dev", type=lambda s: s.split(","),
                        help="published models (sdxl, flux-schnell, flux-dev) or registered family keys")
    parser.add_argument("--tiers", default=None, type=lambda s: s.split(","),
                        help=f"of {', '.join(TIERS)} (default: eager,lossless,fp8; --tiny: eager,fused)")
    parser.add_argument("--batches", default="1,4", type=lambda s: [int(b) for b in s.split(",")],
                        help="batch sizes, up to each model's largest (flux-dev: 1)")
    parser.add_argument("--size", type=int, default=None, help="width and height (default 1024; --tiny: 64)")
    parser.add_argument("--steps", type=int, default=None,
                        help="override the model's steps (SDXL 30, schnell 4, dev 28; --tiny: 4)")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed runs per case first (the server's warm-up already ran each shape)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    known = benchmarked_cases()
    for model in args.models:
        if model not in known:
            parser.error(f"unknown model {model!r}; known: {', '.join(known)}")
    args.tiers = args.tiers or (["eager", "fused"] if args.tiny else ["eager", "lossless", "fp8"])
    for tier in args.tiers:
        if tier not in TIERS:
            parser.error(f"unknown tier {tier!r}; known: {', '.join(TIERS)}")
    if "eager" not in args.tiers:
        args.tiers.insert(0, "eager")  # the baseline of every speed-up
    args.size = args.size or (64 if args.tiny else 1024)
    return args


def main(argv: list[str] | None = None) -> Path:
    import diffusers
    import torch

    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --tiny --device cpu to check the script")
    started = time.perf_counter()
    cases = benchmarked_cases()
    rows, reports = [], []
    for model in args.models:
        for tier in args.tiers:
            tier_rows, report = bench_tier(model, cases[model], tier, args)
            rows += tier_rows
            reports.append(report)
    table = build_table(rows, reports)
    header = (f"{describe_device(args.device)}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
              f"{args.size}x{args.size}, median of {args.runs}, {time.perf_counter() - started:.0f} s in all")
    print(f"\n{header}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_bench-{'tiny-' if args.tiny else ''}{time.strftime('%Y%m%d-%H%M%S')}"
    path = args.out / f"{stem}.json"
    report = {"device": describe_device(args.device), "torch": torch.__version__, "diffusers": diffusers.__version__,
              "size": args.size, "runs": args.runs, "warmup": args.warmup, "tiny": args.tiny,
              "seconds": round(time.perf_counter() - started, 1), "rows": [asdict(r) for r in rows],
              "tiers": [asdict(t) for t in reports], "table": table}
    path.write_text(json.dumps(report, indent=2))
    (args.out / f"{stem}.md").write_text(f"{header}\n\n{table}\n")
    print(f"\nwrote {path} and {stem}.md")
    return path


if __name__ == "__main__":
    main()
