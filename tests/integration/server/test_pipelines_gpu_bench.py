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
def test_tiny_cpu_run_times_bare_and_server_and_writes_json(tmp_path, fixture_families, family):
    path = load_gpu_bench().main(["--tiny", "--device", "cpu", "--families", family, "--batches", "1,2",
                                  "--runs", "1", "--warmup", "0", "--out", str(tmp_path)])
    report = json.loads(path.read_text())
    cases = [(r["family"], r["mode"], r["batch"], r["path"]) for r in report["rows"]]
    assert cases == [(family, "eager", 1, "bare"), (family, "eager", 1, "server"),
                     (family, "eager", 2, "bare"), (family, "eager", 2, "server")]
    assert all(r["median_seconds"] > 0 for r in report["rows"])
    assert f"| {family} | eager | 2 |" in report["table"]


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
