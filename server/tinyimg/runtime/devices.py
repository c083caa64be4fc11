"""The devices this process can run models on: every CUDA device torch sees, and the CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Device:
    name: str  # "cuda:0", "cpu": what torch calls it
    kind: Literal["cuda", "cpu"]
    total_bytes: int
    free_bytes: int
    label: str = ""  # the GPU's product name

    @property
    def free_gb(self) -> float:
        return self.free_bytes / 1024**3


def read_cpu_memory() -> tuple[int, int]:
    """(total, available) host memory in bytes; (0, 0) where /proc/meminfo is missing."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0]) * 1024
    except OSError:
        return 0, 0
    return fields.get("MemTotal", 0), fields.get("MemAvailable", fields.get("MemFree", 0))


def discover_devices() -> list[Device]:
    """CUDA devices with their total/free memory (from torch), then the CPU, always last."""
    import torch

    found = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            found.append(Device(f"cuda:{index}", "cuda", total, free, torch.cuda.get_device_name(index)))
    total, free = read_cpu_memory()
    found.append(Device("cpu", "cpu", total, free, f"{os.cpu_count()} cores"))
    return found


def read_device_status(device: Device) -> dict[str, object]:
    """What ``/status`` says about one device now.

    CPU: the host's total, and as used what this process holds (its RSS; the rest of the host is
    other processes'). CUDA: the device's total and used (every process's, from the driver), this
    process's share (torch's allocator: allocated by tensors, reserved by the cache), and the
    utilisation where ``torch.cuda.utilization`` works (it needs NVML). A device from a given
    inventory that torch cannot see (tests) keeps its inventory figures."""
    entry: dict[str, object] = {"name": device.name, "kind": device.kind, "label": device.label}
    if device.kind == "cpu":
        from tinyimg.wire.process import read_process_status  # the one RSS reader (torch-free)

        total, _ = read_cpu_memory()
        return entry | {"memory_total_bytes": total, "memory_used_bytes": read_process_status().rss_bytes}
    import torch

    if not torch.cuda.is_available():
        return entry | {"memory_total_bytes": device.total_bytes,
                        "memory_used_bytes": device.total_bytes - device.free_bytes}
    index = torch.device(device.name)
    free, total = torch.cuda.mem_get_info(index)
    return entry | {
        "memory_total_bytes": total,
        "memory_used_bytes": total - free,
        "process_allocated_bytes": torch.cuda.memory_allocated(index),
        "process_reserved_bytes": torch.cuda.memory_reserved(index),
        "utilization_percent": read_utilization(index),
    }


def read_utilization(index: Any) -> int | None:
    """Percent of the last sample period a kernel ran, or None where NVML is missing."""
    import torch

    try:
        return int(torch.cuda.utilization(index))
    except Exception:  # no pynvml/NVML, or a driver that does not report it: unknown, not an error
        return None


def release_cuda_cache() -> None:
    """Give cached blocks back after an out-of-memory error, so the next batch starts clean.
    Collects garbage first: tensors caught in reference cycles hold their blocks until then."""
    import gc

    import torch

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


# What an allocation failure says when it arrives as a plain RuntimeError (older torch, or raised
# by cuBLAS/cuDNN/a CUDA kernel rather than the caching allocator).
_OUT_OF_MEMORY_MESSAGES = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
)


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _OUT_OF_MEMORY_MESSAGES)
