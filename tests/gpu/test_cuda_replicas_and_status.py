"""On a GPU machine: a model asking for every GPU gets one replica per GPU, all of them serve, and
/status reports each GPU's memory, this process's share of it and the utilisation where NVML works.
Not run in the session that wrote it (no GPU there): the simulated inventories in
tests/unit/server/test_engine_replicas.py cover the same logic without CUDA."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.tiny_models import tiny_config
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.engine import Engine

pytestmark = pytest.mark.gpu


async def test_every_gpu_gets_a_replica_and_reports_its_memory(tiny_model_dirs):
    import torch

    count = torch.cuda.device_count()
    config = tiny_config(tiny_model_dirs, families=("flux",), dtype="auto", resources={"gpus": count},
                         runtime={"device": "cuda", "cpuFallback": False, "maxBatchSize": 1})
    engine = Engine(config)
    await engine.start()
    try:
        while engine.model_states()[0].state == "loading":
            await asyncio.sleep(0.1)
        [state] = engine.model_states()
        assert sorted(state.devices) == [f"cuda:{i}" for i in range(count)]
        results = await asyncio.gather(*(engine.generate("tiny-flux", GenerationParams(
            "a lighthouse", None, 64, 64, 4, 0.0, (i,))) for i in range(4 * count)))
        assert {r.device for r in results} == set(state.devices)
        status = engine.status()
        for device in (d for d in status["devices"] if d["kind"] == "cuda"):
            assert 0 < device["memory_used_bytes"] <= device["memory_total_bytes"]
            assert device["process_reserved_bytes"] >= device["process_allocated_bytes"] > 0
            assert device["utilization_percent"] is None or 0 <= device["utilization_percent"] <= 100
    finally:
        await engine.stop()
