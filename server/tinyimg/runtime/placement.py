"""Which device runs each model: a pure function of (models, their memory estimates, devices).

Policy per model (``runtime``):
- ``device: cpu`` -> the CPU.
- ``device: cuda`` -> a GPU; the CPU only when ``cpuFallback`` is true.
- ``device: auto`` -> a GPU when one can hold the model; on a machine with no GPU at all, the CPU;
  on a machine whose GPUs are too small, the CPU only when ``cpuFallback`` is true.
- ``offload`` is the most offloading allowed. A model goes whole onto a GPU when it fits; if not,
  with model offload (only the largest component on the GPU at a time), then sequential offload
  (layers streamed in), as far as its ``offload`` allows.
Models are placed largest first, each on the GPU with the most free memory left, so two GPUs
share the load. A model placed on the CPU must fit the host's available memory at the CPU's dtype
(float32: twice a 16-bit estimate) with the models placed there before it; if not, it is refused
with both figures (swapping a model's weights makes every step take minutes).

Replicas: a model asking for ``resources.gpus: N`` gets up to N replicas, each on its own GPU (the
pod is given N GPUs; one copy of the model per GPU, fed by one queue). The first replica decides
where the model lives as above; the others go, one each, on the remaining GPUs that can hold one
(most free first). Fewer GPUs than asked (or too small) means fewer replicas, not a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyimg.families.memory import BYTES_PER_PARAM, resolve_dtype_name
from tinyimg.runtime.devices import Device
from tinyimg.spec import ModelSpec, read_family

OFFLOAD_ORDER = ("none", "model", "sequential")
# Share of the whole-model estimate that must sit on the GPU at once, per offload mode.
OFFLOAD_GPU_SHARE = {"none": 1.0, "model": 0.7, "sequential": 0.15}


@dataclass(frozen=True)
class Placement:
    device: str
    offload: str  # none | model | sequential
    gpu_gb: float  # GPU memory reserved for it (0 on the CPU)
    why: str


@dataclass
class Plan:
    # model name -> its replicas, first the one placed by the policy, then one per extra GPU
    placements: dict[str, list[Placement]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # model name -> why it cannot be placed

    def devices(self, model: str) -> list[str]:
        return [p.device for p in self.placements.get(model, [])]


def host_estimate_gb(spec: ModelSpec, estimate: float) -> float:
    """The model's memory on the CPU: ``estimate`` is at the GPU's dtype, the CPU runs float32
    (``runtime.memoryGb`` is taken as it is, wherever the model runs)."""
    if spec.runtime.memory_gb is not None:
        return estimate
    gpu_dtype = resolve_dtype_name(spec, read_family(spec.family), "cuda")
    return round(estimate * BYTES_PER_PARAM["float32"] / BYTES_PER_PARAM[gpu_dtype], 3)


def allowed_offloads(limit: str) -> tuple[str, ...]:
    return OFFLOAD_ORDER[: OFFLOAD_ORDER.index(limit) + 1]


def place(models: list[tuple[ModelSpec, float]], devices: list[Device]) -> Plan:
    gpus = [d for d in devices if d.kind == "cuda"]
    free_gb = {d.name: d.free_gb for d in gpus}
    host = next((d for d in devices if d.kind == "cpu"), None)
    host_free = host.free_gb if host is not None and host.total_bytes else None  # None: unknown, not checked
    plan = Plan()
    for spec, estimate in sorted(models, key=lambda item: -item[1]):
        placement, failure = place_one(spec, estimate, gpus, free_gb)
        if placement is not None and placement.device == "cpu" and host_free is not None:
            need = host_estimate_gb(spec, estimate)
            if need > host_free:
                failure = (f"{placement.why}, but it needs {need:.1f} GB of host memory (float32 on the CPU)"
                           f" and {host_free:.1f} GB is available")
                placement = None
            else:
                host_free -= need
        if placement is None:
            plan.failures[spec.name] = failure
            continue
        replicas = [placement]
        if placement.device in free_gb:
            free_gb[placement.device] -= placement.gpu_gb
            replicas += place_replicas(spec, estimate, gpus, free_gb, spec.resources.gpus - 1, placement.device)
        plan.placements[spec.name] = replicas
    return plan


def place_replicas(
    spec: ModelSpec, estimate: float, gpus: list[Device], free_gb: dict[str, float], count: int, first: str
) -> list[Placement]:
    """Up to ``count`` more replicas, one per GPU other than ``first``; takes their memory from ``free_gb``."""
    replicas: list[Placement] = []
    for _ in range(count):
        others = [d for d in gpus if d.name != first and d.name not in {r.device for r in replicas}]
        placement, _ = place_one(spec, estimate, others, free_gb) if others else (None, "")
        if placement is None or placement.device == "cpu":
            break
        replicas.append(Placement(placement.device, placement.offload, placement.gpu_gb,
                                  f"replica {len(replicas) + 2} of {count + 1}: {placement.why}"))
        free_gb[placement.device] -= placement.gpu_gb
    return replicas


def place_one(
    spec: ModelSpec, estimate: float, gpus: list[Device], free_gb: dict[str, float]
) -> tuple[Placement | None, str]:
    policy = spec.runtime
    if policy.device == "cpu":
        return on_cpu("runtime.device is cpu"), ""
    if not gpus:
        if policy.device == "auto":
            return on_cpu("no CUDA device on this machine"), ""
        if policy.cpu_fallback:
            return on_cpu("runtime.device is cuda but no CUDA device found; cpuFallback"), ""
        return None, "runtime.device is cuda but no CUDA device was found, and cpuFallback is false"
    for offload in allowed_offloads(policy.offload):
        need = round(estimate * OFFLOAD_GPU_SHARE[offload], 3)
        best = max(gpus, key=lambda d: free_gb[d.name])
        if need <= free_gb[best.name]:
            why = f"needs {need:.1f} GB, {free_gb[best.name]:.1f} GB free"
            return Placement(best.name, offload, need, why), ""
    largest = max(free_gb.values())
    too_big = (
        f"needs {estimate:.1f} GB (offload up to {policy.offload!r}), "
        f"the most free on any GPU is {largest:.1f} GB"
    )
    if policy.cpu_fallback:
        return on_cpu(f"{too_big}; cpuFallback"), ""
    return None, f"{too_big}, and cpuFallback is false"


def on_cpu(why: str) -> Placement:
    return Placement("cpu", "none", 0.0, why)
