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


def model(name: str, gpus: int = 0, **runtime) -> ModelSpec:
    return ModelSpec(name=name, family="sdxl", source="org/repo", runtime=runtime, resources={"gpus": gpus})


def placed(plan, name: str) -> tuple[str, str]:
    [only] = plan.placements[name]
    return only.device, only.offload


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
    assert placed(plan, "m") == (device, offload)


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
    assert plan.devices("big") == ["cuda:0"]
    assert plan.devices("small") == ["cuda:1"]


def test_models_sharing_a_gpu_count_each_others_memory():
    plan = place([(model("a"), 10), (model("b"), 10), (model("c", cpuFallback=True), 10)], [gpu(0, 24), CPU])
    assert [plan.devices(n) for n in "abc"] == [["cuda:0"], ["cuda:0"], ["cpu"]]
    assert "cpuFallback" in plan.placements["c"][0].why


def test_one_unplaceable_model_does_not_stop_the_others():
    plan = place([(model("fits"), 10), (model("huge"), 100)], [gpu(0, 24), CPU])
    assert plan.devices("fits") == ["cuda:0"]
    assert "huge" in plan.failures


@pytest.mark.parametrize(
    ("gpus", "devices", "expected"),
    [
        pytest.param(2, [gpu(0, 40), gpu(1, 40), CPU], ["cuda:0", "cuda:1"], id="two-gpus-asked-two-given"),
        pytest.param(4, [gpu(0, 40), gpu(1, 30), gpu(2, 50), gpu(3, 20), CPU],
                     ["cuda:2", "cuda:0", "cuda:1", "cuda:3"], id="four-replicas-most-free-first"),
        pytest.param(2, [gpu(0, 40), gpu(1, 40), gpu(2, 40), CPU], ["cuda:0", "cuda:1"],
                     id="no-more-replicas-than-asked"),
        pytest.param(2, [gpu(0, 40), CPU], ["cuda:0"], id="fewer-gpus-than-asked-fewer-replicas"),
        pytest.param(2, [gpu(0, 40), gpu(1, 4), CPU], ["cuda:0"], id="a-gpu-too-small-for-a-replica-is-skipped"),
        pytest.param(1, [gpu(0, 40), gpu(1, 40), CPU], ["cuda:0"], id="one-gpu-asked-one-replica"),
        pytest.param(2, [CPU], ["cpu"], id="no-gpu-one-cpu-replica"),
    ],
)
def test_a_model_gets_one_replica_per_gpu_it_asks_for(gpus, devices, expected):
    plan = place([(model("m", gpus=gpus), 10)], devices)
    assert plan.failures == {}
    assert plan.devices("m") == expected
    assert all(p.offload == "none" for p in plan.placements["m"])


def test_extra_replicas_use_offload_where_a_gpu_holds_only_part_and_count_its_memory():
    plan = place([(model("m", gpus=2, offload="model"), 10), (model("n", cpuFallback=True), 10)],
                 [gpu(0, 12), gpu(1, 8), CPU])
    first, second = plan.placements["m"]
    assert (first.device, first.offload, second.device, second.offload) == ("cuda:0", "none", "cuda:1", "model")
    assert second.why.startswith("replica 2 of 2: needs 7.0 GB")
    # 2 GB left on cuda:0 and 1 GB on cuda:1: the next model does not fit on either
    assert plan.devices("n") == ["cpu"]


def test_a_cpu_placed_model_must_fit_the_hosts_available_memory_at_float32():
    host = Device("cpu", "cpu", 64 * GB, 30 * GB)
    # 10 GB at bf16 (sdxl's GPU dtype) is 20 GB at float32: the first fits, the second no longer does.
    plan = place([(model("a", device="cpu"), 10), (model("b", device="cpu"), 10)], [host])
    assert plan.devices("a") == ["cpu"]
    assert plan.failures["b"] == ("runtime.device is cpu, but it needs 20.0 GB of host memory (float32 on the CPU)"
                                  " and 10.0 GB is available")


def test_memory_gb_is_taken_as_it_is_on_the_cpu_and_an_unknown_host_is_not_checked():
    host = Device("cpu", "cpu", 64 * GB, 12 * GB)
    assert place([(model("a", device="cpu", memoryGb=11), 11)], [host]).devices("a") == ["cpu"]
    unknown = Device("cpu", "cpu", 0, 0)  # no /proc/meminfo
    assert place([(model("a", device="cpu"), 500)], [unknown]).devices("a") == ["cpu"]
