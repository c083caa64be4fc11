"""bench/gpu_bench.py: its options and its table (the GPU run itself needs a GPU machine)."""

from __future__ import annotations

import pytest

from tests.support.gpu_bench import load_gpu_bench

gpu_bench = load_gpu_bench()


def test_defaults_are_the_issue_settings():
    args = gpu_bench.parse_args([])
    assert (args.device, args.families, args.modes, args.batches, args.size) == (
        "cuda", ["sdxl", "flux"], ["eager", "compile"], [1, 4], 1024)
    assert {f: gpu_bench.FAMILY_RUN[f][0] for f in ("sdxl", "flux")} == {"sdxl": 30, "flux": 4}


def test_tiny_mode_is_small_and_eager():
    args = gpu_bench.parse_args(["--tiny", "--device", "cpu", "--batches", "1,2"])
    assert (args.size, args.modes, args.batches) == (64, ["eager"], [1, 2])


@pytest.mark.parametrize("argv", [["--families", "sd15"], ["--modes", "fast"]], ids=["unknown-family", "unknown-mode"])
def test_bad_options_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.parse_args(argv)
    assert exit_info.value.code == 2


def test_table_pairs_bare_and_server_and_gives_the_ratio():
    row = gpu_bench.Row
    rows = [row("sdxl", "eager", 1, "bare", 2.0, [2.0], 0.5, 9.5),
            row("sdxl", "eager", 1, "server", 2.2, [2.2], 1 / 2.2, 9.75)]
    assert gpu_bench.build_table(rows).splitlines()[2] == "| sdxl | eager | 1 | 2.000 | 2.200 | 1.100 | 0.50 | 9.8 |"


def test_full_size_configs_match_the_published_shapes():
    # The figures that decide speed and memory; a typo here would benchmark another model.
    assert gpu_bench.SDXL_UNET["block_out_channels"] == (320, 640, 1280)
    assert gpu_bench.SDXL_UNET["transformer_layers_per_block"] == (1, 2, 10)
    assert gpu_bench.SDXL_UNET["projection_class_embeddings_input_dim"] == 6 * 256 + 1280
    assert gpu_bench.SDXL_UNET["cross_attention_dim"] == 768 + 1280
    flux = gpu_bench.FLUX_TRANSFORMER
    assert (flux["num_layers"], flux["num_single_layers"]) == (19, 38)
    assert flux["num_attention_heads"] * flux["attention_head_dim"] == 3072
    assert flux["joint_attention_dim"] == gpu_bench.T5_XXL["d_model"]
    assert flux["in_channels"] == 4 * gpu_bench.FLUX_VAE["latent_channels"]
