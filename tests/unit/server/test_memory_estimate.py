"""Memory estimates: measured from local safetensors headers, published figures for repo ids."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tinyimg.families import family_info
from tinyimg.families.memory import WORKING_FLOOR_GB, estimate_memory_gb, resolve_dtype_name
from tinyimg.spec import ModelSpec

GB = 1024**3


def write_safetensors(path: Path, params: int, dtype: str = "F32") -> None:
    """A header-only safetensors file: the estimate reads headers, never tensor data."""
    width = {"F32": 4, "F16": 2}[dtype]
    header = json.dumps({"w": {"dtype": dtype, "shape": [params], "data_offsets": [0, params * width]}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def spec(source: str, family: str = "sdxl", **fields) -> ModelSpec:
    return ModelSpec(name="m", family=family, source=source, resources={"gpus": 0}, **fields)


def estimate(model: ModelSpec, device_kind: str = "cuda") -> float:
    return estimate_memory_gb(model, family_info(model.family), device_kind)


def test_local_dir_counts_parameters_at_the_run_dtype(tmp_path):
    write_safetensors(tmp_path / "unet" / "a.safetensors", 2 * GB // 4)  # 0.5 G params stored as fp32
    write_safetensors(tmp_path / "vae" / "b.safetensors", GB // 4, "F16")  # 0.25 G params stored as fp16
    weights_fp16 = 0.75 * 2  # GB at 2 bytes per param
    expected = weights_fp16 + max(WORKING_FLOOR_GB, weights_fp16 * 0.2)
    assert estimate(spec(str(tmp_path), dtype="float16"), "cuda") == pytest.approx(expected)
    assert estimate(spec(str(tmp_path), dtype="float32"), "cuda") == pytest.approx(3.0 + 0.6)


@pytest.mark.parametrize(
    ("family", "dtype", "device_kind", "expected"),
    [
        pytest.param("sdxl", "auto", "cuda", 10.0, id="sdxl-repo-auto-fp16"),
        pytest.param("flux", "bfloat16", "cuda", 34.0, id="flux-repo-bf16"),
        pytest.param("flux", "auto", "cpu", 68.0, id="flux-repo-on-cpu-is-float32"),
    ],
)
def test_repo_id_uses_family_figure(family, dtype, device_kind, expected):
    assert estimate(spec("org/model", family, dtype=dtype), device_kind) == expected


def test_spec_override_wins(tmp_path):
    assert estimate(spec("org/model", runtime={"memoryGb": 3.5})) == 3.5


@pytest.mark.parametrize(
    ("family", "dtype", "device_kind", "expected"),
    [("sdxl", "auto", "cuda", "float16"), ("flux", "auto", "cuda", "bfloat16"),
     ("flux", "bfloat16", "cpu", "float32"), ("sdxl", "float32", "cuda", "float32")],
)
def test_resolve_dtype(family, dtype, device_kind, expected):
    model = spec("org/model", family, dtype=dtype)
    assert resolve_dtype_name(model, family_info(family), device_kind) == expected
