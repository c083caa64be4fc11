"""GPU benchmark: full-size SDXL and FLUX.1-schnell with random weights, bare pipeline vs the server.

The architectures come from the published configs (each family file's ``build_full``, in
tinyimg.families) with random weights, so nothing is downloaded; a random-weight model runs the same kernels on the same shapes as the real one, so its
timings and memory are the real model's. Tokenizers are the tiny offline ones from tinyimg.tiny:
the text encoders still see full-length sequences (77 CLIP tokens, 256 T5 tokens).

For each family, mode (eager, torch.compile) and batch size it times (median of --runs, after
--warmup runs) a bare pipeline call and the same request through ``POST /generate`` of the real
server (create_app + uvicorn on loopback, in this process), and records peak GPU memory. It prints
a markdown table and writes JSON to bench/out/.

    python bench/gpu_bench.py                      # on a GPU machine: 1024x1024, bf16
    python bench/gpu_bench.py --tiny --device cpu  # the same code path with tiny models, in seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"
PROMPT = "an astronaut riding a horse on the moon, highly detailed"  # fits the tiny T5's 64 tokens

TINY_STEPS = 4


@dataclass
class Row:
    family: str
    mode: str  # eager | compile
    batch: int
    path: str  # bare | server
    median_seconds: float
    seconds: list[float]
    images_per_second: float
    peak_memory_gb: float | None


def benchmarked_families() -> dict[str, Any]:
    """Every registered family that declares a full-size builder."""
    from tinyimg.families import FAMILIES

    return {key: family for key, family in FAMILIES.items() if family.build_full is not None}


def build_pipeline(family: str, tiny: bool, device: str, dtype: Any) -> Any:
    import torch

    from tinyimg.families import family_info

    torch.manual_seed(0)
    declared = family_info(family)
    pipe = declared.build_tiny().to(device, dtype) if tiny else declared.build_full(device, dtype)
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


def bare_call(pipe: Any, config: Any, batch: int, size: int, steps: int) -> Callable[[], None]:
    """The pipeline called directly with a list of prompts, with the call arguments the family's
    own handler would add (guidance, Flux's sequence length)."""
    import torch

    from tinyimg.families import family_info
    from tinyimg.families.base import GenerationParams

    spec = config.models[0]
    guidance = spec.resolved_defaults().guidance_scale
    handler = family_info(spec.family).handler(spec)
    handler.pipe = pipe
    extra = handler.call_arguments(GenerationParams(PROMPT, None, size, size, steps, guidance, tuple(range(batch))))

    def run() -> None:
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(batch)]
        pipe(prompt=[PROMPT] * batch, width=size, height=size, num_inference_steps=steps,
             generator=generators, output_type="pil", **extra)

    return run


def build_bench_config(family: str, device_kind: str, size: int, steps: int, batches: list[int], dtype: str) -> Any:
    from tinyimg.spec import parse_config

    biggest = max(batches)
    model = {
        "name": f"bench-{family}",
        "family": family,
        "source": f"bench/{family}-random-weights",  # never loaded: the handler is handed the pipeline
        "dtype": dtype,
        "defaults": {"steps": steps, "width": size, "height": size},
        "limits": {"maxWidth": size, "maxHeight": size, "maxSteps": steps, "maxImages": biggest},
        "runtime": {"device": device_kind, "cpuFallback": device_kind == "cpu", "maxBatchSize": biggest,
                    "maxBatchWaitMs": 0, "memoryGb": 1, "requestTimeoutSeconds": 3600},
        "resources": {"gpus": 1 if device_kind == "cuda" else 0},
    }
    return parse_config({"models": [model]}, "<gpu_bench>")


def prebuilt_handler_factory(pipe: Any) -> Callable[[Any], Any]:
    """The server's own handler for the family, given the already-built pipeline instead of loading."""
    from tinyimg.families import load_handler_class

    def factory(spec: Any) -> Any:
        handler = load_handler_class(spec.family)(spec)

        def load(device: str, offload: str = "none") -> None:
            handler.pipe, handler.device, handler.offload = pipe, device, offload

        handler.load = load
        return handler

    return factory


@contextlib.contextmanager
def serving(pipe: Any, config: Any) -> Iterator[Any]:
    import httpx

    from tinyimg.api.app import create_app
    from tinyimg.serve import BackgroundServer

    app = create_app(config, engine_options={"handler_factory": prebuilt_handler_factory(pipe)})
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=3600) as client:
        deadline = time.monotonic() + 1800
        while client.get("/health/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready: {client.get('/health/ready').text}")
            time.sleep(0.1)
        yield client


def server_call(client: Any, model: str, batch: int, size: int, steps: int) -> Callable[[], None]:
    body = {"model": model, "prompt": PROMPT, "width": size, "height": size, "steps": steps, "seed": 0,
            "num_images": batch, "output_format": "png"}

    def run() -> None:
        response = client.post("/generate", json=body)
        response.raise_for_status()

    return run


def bench_family(family: str, args: argparse.Namespace) -> list[Row]:
    import torch

    from tinyimg.families import family_info

    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    declared = family_info(family)
    steps = args.steps or (TINY_STEPS if args.tiny else declared.default_steps)
    pipe = build_pipeline(family, args.tiny, args.device, dtype)
    config = build_bench_config(family, args.device.split(":")[0], args.size, steps, args.batches,
                                "float32" if dtype == torch.float32 else "bfloat16")
    rows = []
    for mode in args.modes:
        if mode == "compile":
            getattr(pipe, declared.denoiser).compile()
        with serving(pipe, config) as client:
            for batch in args.batches:
                paths = {"bare": bare_call(pipe, config, batch, args.size, steps),
                         "server": server_call(client, config.models[0].name, batch, args.size, steps)}
                for path, run in paths.items():
                    seconds, peak = measure(run, args.device, args.warmup, args.runs)
                    median = statistics.median(seconds)
                    rows.append(Row(family, mode, batch, path, median, seconds, batch / median, peak))
                    print(f"{family} {mode} batch={batch} {path}: {median:.3f}s", flush=True)
    del pipe
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


# --- reporting ---------------------------------------------------------------------------------
def build_table(rows: list[Row]) -> str:
    lines = ["| family | mode | batch | bare s | server s | server/bare | images/s (bare) | peak GPU GB |",
             "|---|---|---|---|---|---|---|---|"]
    keyed = {(r.family, r.mode, r.batch, r.path): r for r in rows}
    for (family, mode, batch, path), bare in keyed.items():
        if path != "bare":
            continue
        served = keyed.get((family, mode, batch, "server"))
        peak = max((r.peak_memory_gb for r in (bare, served) if r and r.peak_memory_gb is not None), default=None)
        lines.append(
            f"| {family} | {mode} | {batch} | {bare.median_seconds:.3f} | "
            f"{served.median_seconds:.3f} | {served.median_seconds / bare.median_seconds:.3f} | "
            f"{bare.images_per_second:.2f} | {'-' if peak is None else f'{peak:.1f}'} |"
            if served else f"| {family} | {mode} | {batch} | {bare.median_seconds:.3f} | - | - | - | - |"
        )
    return "\n".join(lines)


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models (checks the script, no GPU needed)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--families", default="sdxl,flux", type=lambda s: s.split(","))
    parser.add_argument("--modes", default=None, type=lambda s: s.split(","),
                        help="eager,compile (default: both; --tiny: eager)")
    parser.add_argument("--batches", default="1,4", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--size", type=int, default=None, help="width and height (default 1024; --tiny: 64)")
    parser.add_argument("--steps", type=int, default=None,
                        help="override: the family's default steps (SDXL 30, Flux 4) by default (--tiny: 4)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case first")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    known = benchmarked_families()
    for family in args.families:
        if family not in known:
            parser.error(f"unknown family {family!r}; known: {', '.join(known)}")
    args.modes = args.modes or (["eager"] if args.tiny else ["eager", "compile"])
    if any(m not in ("eager", "compile") for m in args.modes):
        parser.error("--modes takes eager and/or compile")
    args.size = args.size or (64 if args.tiny else 1024)
    return args


def main(argv: list[str] | None = None) -> Path:
    import diffusers
    import torch

    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --tiny --device cpu to check the script")
    rows = [row for family in args.families for row in bench_family(family, args)]
    table = build_table(rows)
    print(f"\n{describe_device(args.device)}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{args.size}x{args.size}, median of {args.runs}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_bench-{'tiny-' if args.tiny else ''}{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {"device": describe_device(args.device), "torch": torch.__version__, "diffusers": diffusers.__version__,
              "size": args.size, "runs": args.runs, "warmup": args.warmup, "tiny": args.tiny,
              "rows": [asdict(r) for r in rows], "table": table}
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return path


if __name__ == "__main__":
    main()
