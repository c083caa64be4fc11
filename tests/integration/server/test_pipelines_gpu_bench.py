"""bench/gpu_bench.py end to end in --tiny --device cpu mode, for every registered family with a
full-size builder (the product's and the tests' fixture families): the code path the GPU run takes
(build the pipeline, time the bare call, serve it through create_app + uvicorn, write the JSON)."""

from __future__ import annotations

import json

import pytest

from tests.support.gpu_bench import load_gpu_bench
from tests.support.tiny_models import ALL_FAMILIES, fixture_families  # noqa: F401  (a fixture)
from tinyimg.families import family_info


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_tiny_cpu_run_times_bare_and_server_per_tier_and_writes_json_and_a_table(tmp_path, fixture_families, family):
    path = load_gpu_bench().main(["--tiny", "--device", "cpu", "--models", family, "--batches", "1,2",
                                  "--runs", "1", "--out", str(tmp_path)])
    report = json.loads(path.read_text())
    cases = [(r["model"], r["tier"], r["batch"], r["path"]) for r in report["rows"]]
    assert cases == [(family, tier, batch, p) for tier in ("eager", "fused") for batch in (1, 2) for p in ("bare", "server")]
    assert all(r["median_seconds"] > 0 for r in report["rows"])
    tiers = {t["tier"]: t for t in report["tiers"]}
    assert tiers["eager"]["quality"] is None  # nothing accelerated: nothing to compare
    assert tiers["fused"]["quality"] > 30 and tiers["fused"]["cold_start_seconds"] > 0
    assert f"| {family} | fused | 2 |" in report["table"]
    assert path.with_suffix(".md").read_text().endswith(report["table"] + "\n")


def test_the_published_models_build_from_their_family_with_their_own_options(fixture_families):
    import torch

    pipe = load_gpu_bench().build_pipeline(load_gpu_bench().CASES["flux-dev"], False, "meta", torch.bfloat16)
    assert pipe.transformer.config.guidance_embeds is True


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_full_size_architecture_builds_on_the_meta_device_in_the_asked_dtype(fixture_families, family):
    """Built on the meta device (no memory, no weights): the GPU run benchmarks the real shapes."""
    import torch

    declared = family_info(family)
    pipe = declared.build_full("meta", torch.bfloat16)
    assert type(pipe).__name__ == declared.pipeline_class
    denoiser = getattr(pipe, declared.denoiser)
    assert next(denoiser.parameters()).device.type == "meta"
    assert next(pipe.vae.parameters()).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32  # building_on restores it


@pytest.mark.parametrize(
    ("family", "expected_millions"),
    [
        pytest.param("sdxl", {"unet": 2567, "vae": 84, "text_encoder": 123, "text_encoder_2": 695}, id="sdxl"),
        pytest.param("flux", {"transformer": 11891, "vae": 84, "text_encoder": 123, "text_encoder_2": 4762},
                     id="flux-schnell"),
    ],
)
def test_full_size_architectures_have_the_published_parameter_counts(family, expected_millions):
    import torch

    pipe = family_info(family).build_full("meta", torch.bfloat16)
    counts = {name: round(sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e6) for name in expected_millions}
    assert counts == expected_millions
