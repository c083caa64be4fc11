"""GPU benchmark: full-size SDXL and FLUX.1-schnell with random weights, bare pipeline vs the server.

The architectures come from the published configs (inline below) with random weights, so nothing is
downloaded; a random-weight model runs the same kernels on the same shapes as the real one, so its
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

# --- published configs (stabilityai/stable-diffusion-xl-base-1.0, black-forest-labs/FLUX.1-schnell) ---
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "attention_head_dim": (5, 10, 20),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "cross_attention_dim": 2048, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32, "norm_eps": 1e-5,
}
SDXL_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32, "sample_size": 1024,
    "scaling_factor": 0.13025, "force_upcast": True,
}
SDXL_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "steps_offset": 1, "timestep_spacing": "leading", "prediction_type": "epsilon",
}
CLIP_L = {  # SDXL text_encoder and FLUX text_encoder
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "projection_dim": 768, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
}
CLIP_BIGG = {  # SDXL text_encoder_2
    "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 20, "projection_dim": 1280, "max_position_embeddings": 77, "hidden_act": "gelu",
}
FLUX_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
    "guidance_embeds": False, "axes_dims_rope": (16, 56, 56),
}
FLUX_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32, "sample_size": 1024,
    "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False, "use_post_quant_conv": False,
}
FLUX_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
T5_XXL = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_gated_act": True,
    "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
}
FLUX_MAX_SEQUENCE_LENGTH = 256

TINY_STEPS = 4
FAMILY_RUN = {  # steps, guidance, denoiser attribute
    "sdxl": (30, 5.0, "unet"),
    "flux": (4, 0.0, "transformer"),
}


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


@contextlib.contextmanager
def building_on(device: str, dtype: Any) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype``: a 12B-parameter transformer built in
    fp32 on the CPU would take minutes and 48 GB of host memory."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def clip_config(base: dict[str, Any], tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**base, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


def build_full_sdxl(device: str, dtype: Any) -> Any:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from tinyimg.tiny import build_clip_tokenizer

    tokenizer, tokenizer_2 = build_clip_tokenizer(), build_clip_tokenizer()
    with building_on(device, dtype):  # the networks only: the scheduler keeps float32 CPU tables
        networks = {
            "vae": AutoencoderKL(**SDXL_VAE),
            "text_encoder": CLIPTextModel(clip_config(CLIP_L, tokenizer)),
            "text_encoder_2": CLIPTextModelWithProjection(clip_config(CLIP_BIGG, tokenizer_2)),
            "unet": UNet2DConditionModel(**SDXL_UNET),
        }
    return StableDiffusionXLPipeline(
        **networks, tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER)
    )


def build_full_flux(device: str, dtype: Any) -> Any:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    from tinyimg.tiny import build_clip_tokenizer, build_t5_tokenizer

    tokenizer = build_clip_tokenizer()
    with building_on(device, dtype):
        networks = {
            "vae": AutoencoderKL(**FLUX_VAE),
            "text_encoder": CLIPTextModel(clip_config(CLIP_L, tokenizer)),
            "text_encoder_2": T5EncoderModel(T5Config(**T5_XXL)),
            "transformer": FluxTransformer2DModel(**FLUX_TRANSFORMER),
        }
    return FluxPipeline(
        **networks, tokenizer=tokenizer, tokenizer_2=build_t5_tokenizer(FLUX_MAX_SEQUENCE_LENGTH),
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
    )


def build_pipeline(family: str, tiny: bool, device: str, dtype: Any) -> Any:
    import torch

    torch.manual_seed(0)
    if tiny:
        from tinyimg.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(family).to(device, dtype)
    else:
        pipe = {"sdxl": build_full_sdxl, "flux": build_full_flux}[family](device, dtype)
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


def bare_call(pipe: Any, family: str, batch: int, size: int, steps: int) -> Callable[[], None]:
    import torch

    _, guidance, _ = FAMILY_RUN[family]
    extra = {"max_sequence_length": pipe.tokenizer_2.model_max_length} if family == "flux" else {}

    def run() -> None:
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(batch)]
        pipe(prompt=[PROMPT] * batch, width=size, height=size, num_inference_steps=steps, guidance_scale=guidance,
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

    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    steps, _, denoiser = FAMILY_RUN[family]
    steps = args.steps or (TINY_STEPS if args.tiny else steps)
    pipe = build_pipeline(family, args.tiny, args.device, dtype)
    config = build_bench_config(family, args.device.split(":")[0], args.size, steps, args.batches,
                                "float32" if dtype == torch.float32 else "bfloat16")
    rows = []
    for mode in args.modes:
        if mode == "compile":
            getattr(pipe, denoiser).compile()
        with serving(pipe, config) as client:
            for batch in args.batches:
                paths = {"bare": bare_call(pipe, family, batch, args.size, steps),
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
    parser.add_argument("--steps", type=int, default=None, help="override: SDXL 30, Flux 4 by default (--tiny: 4)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case first")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    for family in args.families:
        if family not in FAMILY_RUN:
            parser.error(f"unknown family {family!r}; known: {', '.join(FAMILY_RUN)}")
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
