"""Placement with simulated device inventories: a pure function, no torch."""

from __future__ import annotations

import pytest

from tinyimg.runtime.devices import Device
from tinyimg.runtime.placement import place
from tinyimg.spec import ModelSpec

GB = 1024**3
CPU = Device("cpu", "cpu", 64 * GB, 60 * GB)


def gpu(index: int, free_gb: float, total_gb: float = 80) -> Device:
    return Device(f"cuda:{index}", "cuda", int(total_gb * GB), int(free_gb * GB), "test GPU")


def model(name: str, **runtime) -> ModelSpec:
    return ModelSpec(name=name, family="sdxl", source="org/repo", runtime=runtime, resources={"gpus": 0})


@pytest.mark.parametrize(
    ("runtime", "devices", "estimate", "device", "offload"),
    [
        pytest.param({}, [CPU], 10, "cpu", "none", id="auto-without-gpu-runs-on-cpu"),
        pytest.param({"device": "cpu"}, [gpu(0, 80), CPU], 10, "cpu", "none", id="cpu-policy-ignores-gpu"),
        pytest.param({}, [gpu(0, 24), CPU], 10, "cuda:0", "none", id="auto-fits-small-gpu"),
        pytest.param({"device": "cuda"}, [gpu(0, 24), CPU], 10, "cuda:0", "none", id="cuda-fits"),
        pytest.param({"offload": "model"}, [gpu(0, 8), CPU], 10, "cuda:0", "model", id="too-big-uses-model-offload"),
        pytest.param({"offload": "sequential"}, [gpu(0, 4), CPU], 10, "cuda:0", "sequential",
                     id="too-big-for-model-offload-uses-sequential"),
        pytest.param({"offload": "sequential"}, [gpu(0, 24), CPU], 10, "cuda:0", "none",
                     id="offload-allowed-but-not-needed-stays-whole"),
        pytest.param({"cpuFallback": True}, [gpu(0, 8), CPU], 10, "cpu", "none", id="too-big-falls-back-to-cpu"),
        pytest.param({"device": "cuda", "cpuFallback": True}, [CPU], 10, "cpu", "none",
                     id="cuda-without-gpu-falls-back-when-allowed"),
    ],
)
def test_place_single_model(runtime, devices, estimate, device, offload):
    plan = place([(model("m", **runtime), estimate)], devices)
    assert plan.failures == {}
    assert (plan.placements["m"].device, plan.placements["m"].offload) == (device, offload)


@pytest.mark.parametrize(
    ("runtime", "devices", "reason_part"),
    [
        pytest.param({"device": "cuda"}, [CPU], "no CUDA device was found, and cpuFallback is false",
                     id="cuda-without-gpu-refused"),
        pytest.param({}, [gpu(0, 8), CPU], "needs 10.0 GB (offload up to 'none'), the most free on any GPU is 8.0 GB",
                     id="too-big-no-offload-no-fallback-refused"),
        pytest.param({"offload": "model"}, [gpu(0, 5), gpu(1, 6), CPU], "the most free on any GPU is 6.0 GB",
                     id="too-big-even-with-model-offload-refused"),
    ],
)
def test_place_refuses_with_reason(runtime, devices, reason_part):
    plan = place([(model("m", **runtime), 10)], devices)
    assert plan.placements == {}
    assert reason_part in plan.failures["m"]


def test_two_gpus_spread_models_by_free_memory():
    devices = [gpu(0, 40), gpu(1, 30), CPU]
    plan = place([(model("small", device="cuda"), 10), (model("big", device="cuda"), 34)], devices)
    # largest first onto the emptiest GPU (cuda:0 -> 6 GB left), then the other onto cuda:1
    assert plan.placements["big"].device == "cuda:0"
    assert plan.placements["small"].device == "cuda:1"


def test_models_sharing_a_gpu_count_each_others_memory():
    plan = place([(model("a"), 10), (model("b"), 10), (model("c", cpuFallback=True), 10)], [gpu(0, 24), CPU])
    assert [plan.placements[n].device for n in "abc"] == ["cuda:0", "cuda:0", "cpu"]
    assert "cpuFallback" in plan.placements["c"].why


def test_one_unplaceable_model_does_not_stop_the_others():
    plan = place([(model("fits"), 10), (model("huge"), 100)], [gpu(0, 24), CPU])
    assert plan.placements["fits"].device == "cuda:0"
    assert "huge" in plan.failures
