"""``runtime.acceleration`` on a loaded pipeline: resolve the spec for the device (unset fields take
the device's defaults), refuse what the device cannot do, apply the speed-ups, and toggle the
step cache per call. torch, diffusers and torchao are imported inside functions only.

Order of application (each step sees the modules the previous one left): fused QKV projections,
channels_last, the attention backend, torchao quantization, the step cache's hooks, then
torch.compile (it traces what the others built). Compilation is lazy: the first warm-up call pays
for it (``tinyimg.runtime.warmup``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinyimg.families.family import Family
    from tinyimg.spec import ModelSpec

log = logging.getLogger("tinyimg.engine")

FP8_CAPABILITY = (8, 9)  # Ada and Hopper: the first GPUs with fp8 tensor cores


class AccelerationError(RuntimeError):
    """An acceleration the device or this installation cannot run: the model fails to load, with why."""


@dataclass(frozen=True)
class Acceleration:
    """``runtime.acceleration`` resolved for one device: every choice made."""

    compile: str  # none | regional | full
    fuse_qkv: bool
    channels_last: bool
    quantize: str  # none | int8 | fp8
    attention: str  # sdpa, or a diffusers attention backend
    step_cache: str  # none | first-block
    threshold: float
    min_quality: float

    @property
    def plain(self) -> bool:
        """Nothing changes the plain pipeline's computation (so there is nothing to compare)."""
        return (self.compile, self.fuse_qkv, self.channels_last, self.quantize, self.attention, self.step_cache) == (
            "none", False, False, "none", "sdpa", "none")

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "min_quality"}


def takes_adapters(spec: ModelSpec) -> bool:
    """Declared LoRA adapters, or adapters by URL (run-time registrations need allowed hosts too)."""
    return bool(spec.adapters or spec.adapter_sources.allowed_hosts)


def find_compiler(device_kind: str) -> str | None:
    """The C/C++ compiler torch.compile needs here: Inductor's C++ backend on the CPU (g++), Triton's
    launcher stubs on a GPU (gcc, or cc)."""
    names = ("g++", "c++") if device_kind == "cpu" else ("gcc", "cc")
    return next((found for name in names if (found := shutil.which(name))), None)


def resolve_acceleration(spec: ModelSpec, device_kind: str, compiler: bool = True) -> Acceleration:
    """Unset fields -> the device's defaults: on a GPU the lossless tier (regional compile, fused
    QKV, channels_last); on the CPU full compile, the one that measurably helps there (BENCHMARKS.md
    "Acceleration"). ``compile`` stays off by default for a model that takes LoRA adapters (every
    new adapter set or scale would recompile) and where no compiler is found (``compiler`` False).
    The deprecated ``runtime.compile: true`` means ``compile: full`` when ``acceleration.compile`` is unset."""
    accel, gpu = spec.runtime.acceleration, device_kind == "cuda"
    if accel.compile is not None:
        compile_mode = accel.compile
    elif spec.runtime.compile:
        compile_mode = "full"
    else:
        compile_mode = "none" if takes_adapters(spec) or not compiler else "regional" if gpu else "full"
    return Acceleration(
        compile=compile_mode,
        fuse_qkv=gpu if accel.fuse_qkv is None else accel.fuse_qkv,
        channels_last=gpu if accel.channels_last is None else accel.channels_last,
        quantize=accel.quantize,
        attention=accel.attention,
        step_cache=accel.step_cache.mode,
        threshold=accel.step_cache.threshold,
        min_quality=accel.min_quality,
    )


def check_device(accel: Acceleration, device: str, capability: tuple[int, int] | None, compiler: bool = True) -> None:
    """Refuse what ``device`` cannot run (pure: ``capability`` is the GPU's compute capability,
    None for the CPU; ``compiler`` whether a C compiler was found)."""
    if accel.compile != "none" and not compiler:
        raise AccelerationError(f"runtime.acceleration.compile {accel.compile} needs a C compiler on PATH (g++ for the"
                                " CPU, gcc and the Python headers for Triton on a GPU); none was found")
    if accel.quantize == "fp8" and (capability is None or capability < FP8_CAPABILITY):
        have = "the CPU" if capability is None else f"{device} (compute capability {capability[0]}.{capability[1]})"
        raise AccelerationError(f"runtime.acceleration.quantize fp8 needs a GPU with compute capability 8.9 or"
                                f" newer (Ada, Hopper); this replica runs on {have}")
    if accel.compile == "none" and accel.quantize == "fp8":
        raise AccelerationError("runtime.acceleration.quantize fp8 needs compile")


def read_capability(device: str) -> tuple[int, int] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def apply_acceleration(pipe: Any, family: Family, accel: Acceleration, device: str) -> None:
    """Apply ``accel`` to a loaded pipeline (in place)."""
    import torch

    check_device(accel, device, read_capability(device), find_compiler(device.split(":")[0]) is not None)
    denoiser = getattr(pipe, family.denoiser)
    if accel.fuse_qkv:
        denoiser.fuse_qkv_projections()
        pipe.vae.fuse_qkv_projections()
    if accel.channels_last:
        if family.denoiser == "unet":
            denoiser.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if accel.attention != "sdpa":
        try:
            denoiser.set_attention_backend(accel.attention)
        except Exception as err:  # diffusers checks the backend's package and device
            raise AccelerationError(f"runtime.acceleration.attention {accel.attention}: {err}") from err
    if accel.quantize != "none":
        quantize(denoiser, accel.quantize)
    if accel.step_cache == "first-block":
        from diffusers import FirstBlockCacheConfig

        denoiser.enable_cache(FirstBlockCacheConfig(threshold=accel.threshold))
    if accel.compile != "none":
        allow_recompiles()
    # Static shapes: each warm-up bucket gets its own specialised graph (a graph made dynamic after
    # a second shape was 11% slower than the static one for tiny SDXL at batch 8 on the CPU); a
    # shape outside the buckets compiles once more (tinyimg_shape_recompiles_total).
    if accel.compile == "regional":
        denoiser.compile_repeated_blocks(fullgraph=True, dynamic=False)
        for block in [*pipe.vae.decoder.up_blocks, pipe.vae.decoder.mid_block]:
            block.compile(dynamic=False)
    elif accel.compile == "full":
        denoiser.compile(dynamic=False)
        pipe.vae.decoder.compile(dynamic=False)
    log.info("acceleration applied", extra={"device": device, **accel.describe()})


RECOMPILE_LIMIT = 64  # graphs per compiled function: buckets x batch sizes x adapter sets


def allow_recompiles() -> None:
    """Past torch's recompile limit (8 by default) a function silently runs eager; a server with
    several buckets and batch sizes needs more."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))


def quantize(module: Any, mode: str) -> None:
    """torchao, in place: int8 -> int8 weights (weight-only: every device, ~2x fewer bytes at 16 bit,
    4x at 32); fp8 -> fp8 weights and dynamic per-row fp8 activations (the GPU's fp8 matmuls)."""
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Int8WeightOnlyConfig,
            PerRow,
            quantize_,
        )
    except ImportError as err:
        raise AccelerationError(f"runtime.acceleration.quantize {mode} needs torchao (pip install"
                                f" 'tinyimg-server[acceleration]'): {err}") from err
    config = Int8WeightOnlyConfig() if mode == "int8" else Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    quantize_(module, config)


def use_step_cache(pipe: Any, family: Family, accel: Acceleration, images: int) -> None:
    """The first-block cache decides per call whether to skip, for the whole batch at once: it is
    on only for calls of one image (one image's change cannot speak for another's)."""
    if accel.step_cache == "none":
        return
    denoiser = getattr(pipe, family.denoiser)
    on = bool(denoiser.is_cache_enabled)
    if images == 1 and not on:
        from diffusers import FirstBlockCacheConfig

        denoiser.enable_cache(FirstBlockCacheConfig(threshold=accel.threshold))
    elif images > 1 and on:
        denoiser.disable_cache()


def measure_psnr(reference: Any, image: Any) -> float:
    """Peak signal-to-noise ratio (dB) of ``image`` against ``reference`` (PIL, same size), capped
    at 100 (identical images)."""
    import numpy as np

    a = np.asarray(reference.convert("RGB"), dtype=np.float64)
    b = np.asarray(image.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return 100.0 if mse == 0 else min(100.0, float(10 * np.log10(255.0**2 / mse)))
