"""bench/gpu_bench.py: its options and its table (the GPU run itself needs a GPU machine)."""

from __future__ import annotations

import pytest

from tests.support.gpu_bench import load_gpu_bench
from tinyimg.families import flux, sdxl
from tinyimg.families.offline import CLIP_L

gpu_bench = load_gpu_bench()


def test_defaults_are_the_issue_settings():
    args = gpu_bench.parse_args([])
    assert (args.device, args.families, args.modes, args.batches, args.size) == (
        "cuda", ["sdxl", "flux"], ["eager", "compile"], [1, 4], 1024)
    assert sorted(gpu_bench.benchmarked_families()) == ["flux", "sdxl"]


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
    assert sdxl.SDXL_UNET["block_out_channels"] == (320, 640, 1280)
    assert sdxl.SDXL_UNET["transformer_layers_per_block"] == (1, 2, 10)
    assert sdxl.SDXL_UNET["projection_class_embeddings_input_dim"] == 6 * 256 + sdxl.CLIP_BIGG["hidden_size"]
    assert sdxl.SDXL_UNET["cross_attention_dim"] == CLIP_L["hidden_size"] + sdxl.CLIP_BIGG["hidden_size"]
    transformer = flux.FLUX_TRANSFORMER
    assert (transformer["num_layers"], transformer["num_single_layers"]) == (19, 38)
    assert transformer["num_attention_heads"] * transformer["attention_head_dim"] == 3072
    assert transformer["joint_attention_dim"] == flux.T5_XXL["d_model"]
    assert transformer["in_channels"] == 4 * flux.FLUX_VAE["latent_channels"]
