"""The engine on a simulated device inventory: two GPUs that do not exist here, so the handler is
a stand-in that records where it was loaded and answers blank images after a short sleep (the
real pipelines on CPU: tests/integration/server; real GPUs: tests/gpu, not run in this session)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tinyimg.families.acceleration import resolve_acceleration
from tinyimg.families.base import GeneratedImage, GenerationParams
from tinyimg.runtime.devices import Device
from tinyimg.runtime.engine import Engine
from tinyimg.spec import parse_config

GB = 1024**3
CPU = Device("cpu", "cpu", 64 * GB, 60 * GB)


def gpu(index: int, free_gb: float = 40) -> Device:
    return Device(f"cuda:{index}", "cuda", 80 * GB, int(free_gb * GB), "simulated GPU")


class StandInHandler:
    """Loads nowhere; each call sleeps ``SECONDS`` per request on the device thread."""

    SECONDS = 0.3
    loaded: list[str] = []

    def __init__(self, spec) -> None:
        self.spec = spec
        self.device = None
        self.acceleration = resolve_acceleration(spec, "cpu", compiler=False)  # plain: the warm-up compares nothing
        self.phases = {}

    def accelerate(self) -> None:
        pass

    def load(self, device: str, offload: str = "none") -> None:
        if self.spec.source == "org/broken-on-cuda-1" and device == "cuda:1":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        self.device = device
        self.loaded.append(device)

    def generate(self, batch: list[GenerationParams], should_stop=None) -> list[list[GeneratedImage]]:
        time.sleep(self.SECONDS * len(batch))
        return [[GeneratedImage(None, seed) for seed in p.seeds] for p in batch]


def config(gpus: int, source: str = "org/repo"):
    return parse_config({"models": [{
        "name": "m", "family": "sdxl", "source": source, "resources": {"gpus": gpus},
        "runtime": {"device": "cuda", "memoryGb": 10, "maxBatchSize": 1, "queueSize": 16},
    }]}, "<replicas>")


@pytest.fixture
async def engine_on():
    engines = []

    async def start(cfg, devices) -> Engine:
        StandInHandler.loaded = []
        engine = Engine(cfg, devices=devices, handler_factory=StandInHandler)
        await engine.start()
        engines.append(engine)
        while engine.model_states()[0].state == "loading":
            await asyncio.sleep(0.01)
        return engine

    yield start
    for engine in engines:
        await engine.stop()


def params(seed: int) -> GenerationParams:
    return GenerationParams("p", None, 1024, 1024, 30, 5.0, (seed,), request_id=f"r{seed}")


async def test_two_gpus_asked_two_given_one_replica_on_each_and_both_serve(engine_on):
    engine = await engine_on(config(gpus=2), [gpu(0), gpu(1), CPU])
    [state] = engine.model_states()
    assert (state.state, state.devices, sorted(StandInHandler.loaded)) == ("ready", ["cuda:0", "cuda:1"],
                                                                          ["cuda:0", "cuda:1"])
    started = time.monotonic()
    results = await asyncio.gather(*(engine.generate("m", params(i)) for i in range(4)))
    elapsed = time.monotonic() - started
    assert sorted(r.device for r in results) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert elapsed < 4 * StandInHandler.SECONDS  # two devices at once: about half of one after another
    status = engine.status()["models"]["m"]
    assert (status["devices"], status["served"]) == (["cuda:0", "cuda:1"], 4)


async def test_the_queue_depth_and_in_flight_count_every_replica(engine_on):
    engine = await engine_on(config(gpus=2), [gpu(0), gpu(1), CPU])
    calls = [asyncio.ensure_future(engine.generate("m", params(i))) for i in range(5)]
    await asyncio.sleep(0.1)
    status = engine.status()["models"]["m"]
    assert (status["in_flight"], status["queue_depth"]) == (2, 3)
    await asyncio.gather(*calls)


async def test_one_gpu_asked_on_a_two_gpu_machine_uses_one(engine_on):
    engine = await engine_on(config(gpus=1), [gpu(0), gpu(1), CPU])
    assert engine.model_states()[0].devices == ["cuda:0"]
    results = await asyncio.gather(*(engine.generate("m", params(i)) for i in range(2)))
    assert {r.device for r in results} == {"cuda:0"}


async def test_a_replica_that_fails_to_load_leaves_the_model_serving_on_the_others(engine_on):
    engine = await engine_on(config(gpus=2, source="org/broken-on-cuda-1"), [gpu(0), gpu(1), CPU])
    [state] = engine.model_states()
    assert (state.state, state.devices) == ("ready", ["cuda:0"])
    assert engine.readiness() == (True, "all models ready")
    assert (await engine.generate("m", params(1))).device == "cuda:0"


async def test_status_reports_each_simulated_gpu_from_its_inventory(engine_on):
    engine = await engine_on(config(gpus=2), [gpu(0, free_gb=40), gpu(1, free_gb=30), CPU])
    status = engine.status()
    by_name = {d["name"]: d for d in status["devices"]}
    assert [d["name"] for d in status["devices"]] == ["cuda:0", "cuda:1", "cpu"]
    assert (by_name["cuda:1"]["memory_total_bytes"], by_name["cuda:1"]["memory_used_bytes"]) == (80 * GB, 50 * GB)
    assert by_name["cuda:0"]["label"] == "simulated GPU"
    assert status["models"]["m"]["devices"] == ["cuda:0", "cuda:1"]


async def test_the_status_answer_keeps_the_replicas_and_the_per_gpu_fields(engine_on):
    from tinyimg.api.info import build_status

    engine = await engine_on(config(gpus=2), [gpu(0), gpu(1), CPU])
    answer = build_status(engine.status(), engine.model_states()).model_dump()
    assert answer["models"]["m"]["devices"] == ["cuda:0", "cuda:1"]
    assert [(d["name"], d["label"]) for d in answer["devices"]] == [
        ("cuda:0", "simulated GPU"), ("cuda:1", "simulated GPU"), ("cpu", "")]
    assert answer["process"]["rss_bytes"] > 0  # the API adds the process's own usage
    cpu = answer["devices"][2]
    assert cpu["memory_used_bytes"] == pytest.approx(answer["process"]["rss_bytes"], abs=64 * 2**20)
