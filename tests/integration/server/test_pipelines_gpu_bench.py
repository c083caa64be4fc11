"""bench/gpu_bench.py end to end in --tiny --device cpu mode: the code path the GPU run takes
(build the pipeline, time the bare call, serve it through create_app + uvicorn, write the JSON)."""

from __future__ import annotations

import json

import pytest

from tests.support.gpu_bench import load_gpu_bench


def test_tiny_cpu_run_times_bare_and_server_and_writes_json(tmp_path):
    path = load_gpu_bench().main(["--tiny", "--device", "cpu", "--families", "flux", "--batches", "1,2",
                           "--runs", "1", "--warmup", "0", "--out", str(tmp_path)])
    report = json.loads(path.read_text())
    cases = [(r["family"], r["mode"], r["batch"], r["path"]) for r in report["rows"]]
    assert cases == [("flux", "eager", 1, "bare"), ("flux", "eager", 1, "server"),
                     ("flux", "eager", 2, "bare"), ("flux", "eager", 2, "server")]
    assert all(r["median_seconds"] > 0 for r in report["rows"])
    assert "| flux | eager | 2 |" in report["table"]


@pytest.mark.parametrize(
    ("family", "expected_millions"),
    [
        pytest.param("sdxl", {"unet": 2567, "vae": 84, "text_encoder": 123, "text_encoder_2": 695}, id="sdxl"),
        pytest.param("flux", {"transformer": 11891, "vae": 84, "text_encoder": 123, "text_encoder_2": 4762},
                     id="flux-schnell"),
    ],
)
def test_full_size_architectures_have_the_published_parameter_counts(family, expected_millions):
    """Built on the meta device (no memory, no weights): the GPU run benchmarks the real shapes."""
    import torch

    gpu_bench = load_gpu_bench()
    build = {"sdxl": gpu_bench.build_full_sdxl, "flux": gpu_bench.build_full_flux}[family]
    pipe = build("meta", torch.bfloat16)
    counts = {name: round(sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e6) for name in expected_millions}
    assert counts == expected_millions
    assert next(pipe.vae.parameters()).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32  # building_on restores it
