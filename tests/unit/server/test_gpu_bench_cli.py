"""bench/gpu_bench.py: its options and its table (the GPU run itself needs a GPU machine)."""

from __future__ import annotations

import pytest

from tests.support.gpu_bench import load_gpu_bench
from tinyimg.families import flux, sdxl
from tinyimg.families.offline import CLIP_L

gpu_bench = load_gpu_bench()


def test_defaults_are_the_issue_settings():
    args = gpu_bench.parse_args([])
    assert (args.device, args.models, args.tiers, args.batches, args.size, args.runs) == (
        "cuda", ["sdxl", "flux-schnell", "flux-dev"], ["eager", "lossless", "fp8"], [1, 4], 1024, 2)
    cases = gpu_bench.benchmarked_cases()
    assert [(cases[m].family, cases[m].steps, cases[m].batches) for m in args.models] == [
        ("sdxl", 30, (1, 4)), ("flux", 4, (1, 4)), ("flux", 28, (1,))]
    assert cases["flux-dev"].build == {"guidance_embeds": True} and cases["flux-dev"].guidance == 3.5
    assert gpu_bench.TIERS["lossless"] == {"compile": "regional", "fuseQkv": True, "channelsLast": True}


def test_tiny_mode_is_small_and_compiles_nothing():
    args = gpu_bench.parse_args(["--tiny", "--device", "cpu", "--batches", "1,2"])
    assert (args.size, args.tiers, args.batches) == (64, ["eager", "fused"], [1, 2])


def test_eager_is_always_measured_as_the_baseline():
    assert gpu_bench.parse_args(["--tiers", "fp8"]).tiers == ["eager", "fp8"]


@pytest.mark.parametrize("argv", [["--models", "sd15"], ["--tiers", "fast"]], ids=["unknown-model", "unknown-tier"])
def test_bad_options_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.parse_args(argv)
    assert exit_info.value.code == 2


def test_every_tier_is_a_valid_acceleration_for_every_model():
    for name, case in gpu_bench.benchmarked_cases().items():
        for tier, acceleration in gpu_bench.TIERS.items():
            if tier == "step-cache" and case.family == "sdxl":
                continue  # transformer families only (the schema refuses it for a UNet)
            config = gpu_bench.build_bench_config(case, f"bench-{name}", "cuda", 1024, case.steps, [1, 4], "bfloat16",
                                                  acceleration)
            assert config.models[0].runtime.acceleration.min_quality == 0


def test_table_pairs_bare_and_server_and_gives_the_ratio_and_the_speed_up():
    row, tier = gpu_bench.Row, gpu_bench.TierReport
    rows = [row("sdxl", "eager", 1, "bare", 2.0, [2.0], 0.5, 9.5),
            row("sdxl", "eager", 1, "server", 2.2, [2.2], 1 / 2.2, 9.75),
            row("sdxl", "lossless", 1, "bare", 1.0, [1.0], 1.0, 9.0),
            row("sdxl", "lossless", 1, "server", 1.02, [1.02], 1 / 1.02, 9.0)]
    reports = [tier("sdxl", "eager", None, 3.0, None, 2.1), tier("sdxl", "lossless", 21.5, 30.25, 41.04, 1.0)]
    lines = gpu_bench.build_table(rows, reports).splitlines()
    assert lines[2] == "| sdxl | eager | 1 | 2.000 | 2.200 | 1.100 | 0.91x | 0.45 | 9.8 | - | 3.0 | - |"
    assert lines[3] == "| sdxl | lossless | 1 | 1.000 | 1.020 | 1.020 | 1.96x | 0.98 | 9.0 | 21.5 | 30.2 | 41.0 |"


def test_full_size_configs_match_the_published_shapes():
    # The figures that decide speed and memory; a typo here would benchmark another model.
    assert sdxl.SDXL_UNET["block_out_channels"] == (320, 640, 1280)
    assert sdxl.SDXL_UNET["transformer_layers_per_block"] == (1, 2, 10)
    assert sdxl.SDXL_UNET["projection_class_embeddings_input_dim"] == 6 * 256 + sdxl.CLIP_BIGG["hidden_size"]
    assert sdxl.SDXL_UNET["cross_attention_dim"] == CLIP_L["hidden_size"] + sdxl.CLIP_BIGG["hidden_size"]
    transformer = flux.FLUX_TRANSFORMER
    assert (transformer["num_layers"], transformer["num_single_layers"]) == (19, 38)
    assert transformer["num_attention_heads"] * transformer["attention_head_dim"] == 3072
    assert transformer["joint_attention_dim"] == flux.T5_XXL["d_model"]
    assert transformer["in_channels"] == 4 * flux.FLUX_VAE["latent_channels"]


def test_make_bench_gpu_runs_the_benchmark_with_its_arguments():
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    # Under `make test` the parent make's flags would add "Entering/Leaving directory" lines.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    planned = subprocess.run(["make", "--no-print-directory", "-n", "-o", "venv", "bench-gpu",
                              "BENCH_GPU_ARGS=--tiny --device cpu"],
                             cwd=root, capture_output=True, text=True, check=True, env=env).stdout.strip().splitlines()
    assert planned[-1] == ".venv/bin/python bench/gpu_bench.py --tiny --device cpu"
