"""How much accelerator memory a model needs, before loading it.

A local directory is measured (parameter counts from the safetensors headers, at the dtype the model
will run in); a repo id uses the family's published figure. ``runtime.memoryGb`` overrides both.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinyimg.families.family import Family
    from tinyimg.spec import ModelSpec

GB = 1024**3
BYTES_PER_PARAM = {"float32": 4, "float16": 2, "bfloat16": 2}
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
# Activations, the VAE decode and the CUDA context on top of the weights.
WORKING_FRACTION = 0.2
WORKING_FLOOR_GB = 0.5


def resolve_dtype_name(spec: ModelSpec, family: Family, device_kind: str) -> str:
    """The dtype the model runs in on that kind of device. CPUs run float32: their half-precision
    kernels are slow or missing."""
    if device_kind == "cpu":
        return "float32"
    if spec.dtype == "auto":
        return family.gpu_dtype
    return spec.dtype


def read_weight_bytes(model_dir: Path, bytes_per_param: int) -> int:
    """Bytes the weights under ``model_dir`` take at ``bytes_per_param``. Counts parameters from
    safetensors headers; other weight files count by size."""
    total = 0
    for path in sorted(model_dir.rglob("*")):
        if path.suffix == ".safetensors":
            total += read_safetensors_params(path) * bytes_per_param
        elif path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
            total += path.stat().st_size
    return total


def read_safetensors_params(path: Path) -> int:
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    params = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        params += (end - start) // SAFETENSORS_BYTES.get(entry["dtype"], 4)
    return params


def estimate_memory_gb(spec: ModelSpec, family: Family, device_kind: str = "cuda") -> float:
    """Device memory the model needs when placed whole on a device of that kind."""
    if spec.runtime.memory_gb is not None:
        return spec.runtime.memory_gb
    bytes_per_param = BYTES_PER_PARAM[resolve_dtype_name(spec, family, device_kind)]
    if spec.is_local_source():
        source = Path(spec.source).expanduser()
        if not source.is_dir():  # said as it is, not as a family-sized estimate no host can place
            raise FileNotFoundError(f"model directory {spec.source} does not exist")
        weights_gb = read_weight_bytes(source, bytes_per_param) / GB
        return round(weights_gb + max(WORKING_FLOOR_GB, weights_gb * WORKING_FRACTION), 3)
    return family.memory_gb_bf16 * bytes_per_param / 2
