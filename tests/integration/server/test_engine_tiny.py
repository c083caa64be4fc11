"""The Engine with real tiny pipelines on CPU: loading, batching, queue limits, deadlines, failures.

Where a test needs a stuck or failing pipeline, it injects a fault with a handler subclass through
``handler_factory``; everything else is the real code path."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from tests.support.tiny_models import tiny_config
from tinyimg.core.drain import DrainTiming
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.engine import Engine
from tinyimg.runtime.jobs import DeadlineExceeded, Draining, GenerationFailed, ModelNotFound, ModelNotReady, QueueFull

FLUX = "tiny-flux"


def params(prompt: str = "a red cube", *seeds: int, size: int = 64) -> GenerationParams:
    return GenerationParams(prompt, None, size, size, 2, 0.0, seeds or (1,), request_id=f"req-{prompt}")


async def wait_until_settled(engine: Engine, timeout: float = 60) -> None:
    async def settled():
        while any(s.state == "loading" for s in engine.model_states()):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(settled(), timeout)


def hold(gated) -> None:
    """Stop the gated handler at its next call (and forget the calls before: the warm-up's)."""
    gated.gate.clear()
    gated.entered.clear()


async def in_pipeline(gated) -> None:
    """Until a pipeline call is held by the gate (the device thread sets the handler's event)."""
    assert await asyncio.to_thread(gated.entered.wait, 10), "no pipeline call started"


async def queued(engine: Engine, depth: int, model: str = FLUX) -> None:
    """Until ``depth`` requests of ``model`` wait in the queue: woken by the queue's own change event."""
    changed = engine.listen_queue()
    while True:
        changed.clear()
        if engine.status()["models"][model]["queue_depth"] >= depth:
            return
        await asyncio.wait_for(changed.wait(), 10)


@pytest.fixture
async def engine_factory(tiny_model_dirs):
    engines = []

    async def start(families=("flux",), **kwargs) -> Engine:
        runtime = kwargs.pop("runtime", {})
        config = tiny_config(tiny_model_dirs, families=families, runtime=runtime)
        engine = Engine(config, **kwargs)
        await engine.start()
        engines.append(engine)
        await wait_until_settled(engine)
        return engine

    yield start
    for engine in engines:
        await engine.stop()


async def test_both_families_load_and_generate_the_requested_size(engine_factory):
    states = []
    engine = await engine_factory(families=("sdxl", "flux"), on_state=lambda m, s, _reason: states.append((m, s)))
    assert engine.readiness() == (True, "all models ready")
    for model in ("tiny-sdxl", "tiny-flux"):
        result = await engine.generate(model, params("a red cube", 3, 4, size=96))
        assert [img.image.size for img in result.images] == [(96, 96), (96, 96)]
        assert [img.seed for img in result.images] == [3, 4]
        assert result.device == "cpu"
    assert ("tiny-sdxl", "loading") in states and ("tiny-sdxl", "ready") in states
    assert [(s.name, s.state, s.device, s.offload) for s in engine.model_states()] == [
        ("tiny-sdxl", "ready", "cpu", "none"), ("tiny-flux", "ready", "cpu", "none")]


async def test_readiness_is_false_while_loading(tiny_model_dirs):
    engine = Engine(tiny_config(tiny_model_dirs, families=("flux",)))
    await engine.start()
    try:
        ready, reason = engine.readiness()
        assert (ready, reason) == (False, "loading tiny-flux")
        with pytest.raises(ModelNotReady):
            await engine.generate(FLUX, params())
        await wait_until_settled(engine)
        assert engine.readiness() == (True, "all models ready")
    finally:
        await engine.stop()


async def test_readiness_waits_for_the_warm_up_generation(tiny_model_dirs, gated):
    gated.gate.clear()
    engine = Engine(tiny_config(tiny_model_dirs, families=("flux",)), handler_factory=gated)
    await engine.start()
    try:
        assert await asyncio.to_thread(gated.entered.wait, 60)  # weights loaded, warm-up call waiting
        assert engine.readiness() == (False, "loading tiny-flux")
        gated.gate.set()
        await wait_until_settled(engine)
        assert engine.readiness() == (True, "all models ready")
        assert gated.prompts == [["warm-up"], ["warm-up"]]  # the shape bucket (one step), then the timed default request
    finally:
        await engine.stop()


async def test_concurrent_requests_share_pipeline_calls_and_all_complete(engine_factory):
    batches = []
    engine = await engine_factory(on_batch=lambda m, n, s: batches.append((m, n)),
                                  runtime={"maxBatchSize": 4, "maxBatchWaitMs": 200})
    batches.clear()  # forget the warm-up
    results = await asyncio.gather(*(engine.generate(FLUX, params(f"prompt {i}", i)) for i in range(6)))
    assert [r.images[0].seed for r in results] == list(range(6))
    assert sum(n for _, n in batches) == 6
    assert max(n for _, n in batches) > 1
    assert max(r.batch_size for r in results) > 1
    assert engine.status()["models"][FLUX]["served"] == 6


async def test_same_seed_in_a_batch_matches_the_seed_alone(engine_factory):
    engine = await engine_factory(runtime={"maxBatchSize": 4, "maxBatchWaitMs": 200})
    together = await asyncio.gather(engine.generate(FLUX, params("a red cube", 5)),
                                    engine.generate(FLUX, params("a blue ball", 6)))
    assert together[0].batch_size == 2
    alone = await engine.generate(FLUX, params("a blue ball", 6))
    diff = np.abs(np.asarray(alone.images[0].image, dtype=int) - np.asarray(together[1].images[0].image, dtype=int))
    assert diff.max() <= 1


async def test_full_queue_refuses_with_queue_full(engine_factory, gated):
    engine = await engine_factory(handler_factory=gated, runtime={"queueSize": 2, "maxBatchSize": 1})
    hold(gated)
    running = asyncio.ensure_future(engine.generate(FLUX, params("first")))
    await in_pipeline(gated)  # "first" is now in the pipeline; the next two wait in the queue
    waiting = [asyncio.ensure_future(engine.generate(FLUX, params(f"q{i}"))) for i in range(2)]
    await queued(engine, 2)
    with pytest.raises(QueueFull) as refused:
        await engine.generate(FLUX, params("one too many"))
    assert refused.value.status == 429 and refused.value.retry_after
    assert engine.status()["models"][FLUX]["queue_depth"] == 2
    assert engine.status()["models"][FLUX]["in_flight"] == 1
    gated.gate.set()
    assert all(len(r.images) == 1 for r in await asyncio.gather(running, *waiting))


async def test_deadline_passing_in_the_queue_raises_deadline_exceeded(engine_factory, gated):
    engine = await engine_factory(handler_factory=gated, runtime={"maxBatchSize": 1})
    hold(gated)
    blocker = asyncio.ensure_future(engine.generate(FLUX, params("first")))
    await in_pipeline(gated)
    with pytest.raises(DeadlineExceeded, match="waiting in the queue") as late:
        await engine.generate(FLUX, params("late"), timeout=0.2)
    assert late.value.status == 504
    assert engine.status()["models"][FLUX]["queue_depth"] == 0  # the expired job left the queue
    gated.gate.set()
    await blocker
    assert engine.status()["models"][FLUX]["failed"] == 1


async def test_deadline_passing_in_the_pipeline_raises_deadline_exceeded(engine_factory, gated):
    engine = await engine_factory(handler_factory=gated, runtime={"maxBatchSize": 1})
    gated.gate.clear()
    with pytest.raises(DeadlineExceeded, match="while generating") as late:
        await engine.generate(FLUX, params("slow"), timeout=0.3)
    assert late.value.status == 504
    assert engine.status()["models"][FLUX]["in_flight"] == 1  # a pipeline call cannot be interrupted
    gated.gate.set()
    assert len((await engine.generate(FLUX, params("next"))).images) == 1  # the late result was dropped
    counts = engine.status()["models"][FLUX]
    assert (counts["served"], counts["failed"], counts["in_flight"]) == (1, 1, 0)


@pytest.mark.parametrize(
    ("prompt", "code"),
    [("explode", "generation_failed"), ("oom", "out_of_memory"), ("oom-runtime-error", "out_of_memory")],
)
async def test_pipeline_exception_fails_only_that_request(engine_factory, gated, prompt, code):
    engine = await engine_factory(handler_factory=gated)
    with pytest.raises(GenerationFailed) as failed:
        await engine.generate(FLUX, params(prompt))
    assert failed.value.code == code and failed.value.status == 500
    result = await engine.generate(FLUX, params("fine afterwards"))
    assert len(result.images) == 1
    counts = engine.status()["models"][FLUX]
    assert (counts["served"], counts["failed"]) == (1, 1)
    assert engine.readiness()[0] is True


@pytest.mark.parametrize("family", ["sdxl", "flux"])
async def test_a_prompt_the_tokenizer_rejects_fails_only_its_own_request_in_a_batch(engine_factory, family, caplog):
    # A lone surrogate reaches the engine only past the HTTP layer's check (the engine serves other
    # callers too); the real tokenizer refuses it, which fails the whole pipeline call it rides in.
    batches = []
    engine = await engine_factory(families=(family,), on_batch=lambda m, n, s: batches.append(n),
                                  runtime={"maxBatchSize": 4, "maxBatchWaitMs": 300})
    batches.clear()  # forget the warm-up
    prompts = ["a red cube", "x\ud800", "a blue ball"]
    with caplog.at_level(logging.WARNING, logger="tinyimg.engine"):
        results = await asyncio.gather(
            *(engine.generate(f"tiny-{family}", params(p, i)) for i, p in enumerate(prompts)), return_exceptions=True)
    [retried] = [r for r in caplog.records if r.getMessage() == "batch failed; running its requests one at a time"]
    assert retried.request_ids == [f"req-{p}" for p in prompts]  # all three rode in the call that failed
    cube, culprit, ball = results
    assert isinstance(culprit, GenerationFailed) and culprit.status == 500
    assert "TypeError" in culprit.message
    assert [img.seed for img in cube.images] == [0] and [img.seed for img in ball.images] == [2]
    assert batches == [1, 1]  # the failed batch of three, then each request alone
    alone = await engine.generate(f"tiny-{family}", params("a blue ball", 2))
    assert np.array_equal(np.asarray(alone.images[0].image), np.asarray(ball.images[0].image))
    counts = engine.status()["models"][f"tiny-{family}"]
    assert (counts["served"], counts["failed"]) == (3, 1)


async def test_model_with_missing_directory_fails_and_the_other_serves(engine_factory, tiny_model_dirs, tmp_path):
    missing = {"sdxl": tmp_path / "nowhere", "flux": tiny_model_dirs["flux"]}
    engine = Engine(tiny_config(missing))
    await engine.start()
    try:
        await wait_until_settled(engine)
        state = {s.name: s for s in engine.model_states()}
        assert state["tiny-sdxl"].state == "failed"
        assert "does not exist" in state["tiny-sdxl"].reason
        ready, reason = engine.readiness()
        assert not ready and reason.startswith("tiny-sdxl failed: FileNotFoundError: model directory")
        with pytest.raises(ModelNotReady, match="failed"):
            await engine.generate("tiny-sdxl", params())
        assert len((await engine.generate(FLUX, params())).images) == 1
    finally:
        await engine.stop()


async def test_unplaceable_model_fails_with_the_placement_reason(tiny_model_dirs):
    config = tiny_config(tiny_model_dirs, families=("flux",), runtime={"device": "cuda", "cpuFallback": False})
    config.models[0].resources.gpus = 1
    engine = Engine(config)
    await engine.start()
    try:
        await wait_until_settled(engine)
        ready, reason = engine.readiness()
        assert not ready
        assert "cannot be placed: runtime.device is cuda but no CUDA device was found" in reason
    finally:
        await engine.stop()


async def test_unknown_model_raises_model_not_found(engine_factory):
    engine = await engine_factory()
    with pytest.raises(ModelNotFound, match="known models: tiny-flux"):
        await engine.generate("nope", params())


def read_vm_rss() -> int:
    """This process's RSS from /proc/self/status (the engine reads /proc/self/statm)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


async def test_status_reports_devices_and_counts(engine_factory):
    engine = await engine_factory()
    await engine.generate(FLUX, params())
    status = engine.status()
    [cpu] = status["devices"]
    assert cpu["name"] == "cpu" and cpu["kind"] == "cpu"
    assert 0 < cpu["memory_used_bytes"] < cpu["memory_total_bytes"]
    model = status["models"][FLUX]
    measured = ("generate_seconds", "startup", "acceleration")
    assert {k: v for k, v in model.items() if k not in measured} == {
        "device": "cpu", "devices": ["cpu"], "queue_depth": 0, "in_flight": 0, "served": 1, "failed": 0,
        "denoise_steps": params().steps, "resident_adapters": [],
        "adapter_events": {"loads": 0, "hits": 0, "evictions": 0, "failures": 0}, "shape_recompiles": 0}
    assert set(model["startup"]) == {"download", "load", "warmup"}  # uncompiled: no compile phase
    assert model["acceleration"]["quality"] is None and model["acceleration"]["seconds_per_image"] > 0
    assert 0 < model["generate_seconds"] < 60
    assert status["uptime_seconds"] > 0
    # What the server holds of the host's memory: its own RSS, not what every process uses.
    assert abs(cpu["memory_used_bytes"] - read_vm_rss()) < 64 * 2**20


async def test_stop_fails_queued_requests_cleanly(engine_factory, gated):
    engine = await engine_factory(handler_factory=gated, runtime={"maxBatchSize": 1})
    hold(gated)
    running = asyncio.ensure_future(engine.generate(FLUX, params("first")))
    await in_pipeline(gated)
    left_behind = asyncio.ensure_future(engine.generate(FLUX, params("queued")))
    await queued(engine, 1)
    stopping = asyncio.ensure_future(engine.stop())
    await asyncio.wait({left_behind}, timeout=10)  # the stop answers the queued request at once
    gated.gate.set()
    await stopping
    assert len((await running).images) == 1  # the batch in the pipeline finishes
    with pytest.raises(Draining, match="left unfinished, this server is shutting down") as left:
        await left_behind
    assert (left.value.status, left.value.code, left.value.retry_after) == (503, "draining", 1.0)


async def test_drain_keeps_taking_requests_for_the_prestop_window_then_refuses_and_finishes_the_queue(
        engine_factory, gated):
    engine = await engine_factory(handler_factory=gated, runtime={"maxBatchSize": 1})
    hold(gated)
    accepted = [asyncio.ensure_future(engine.generate(FLUX, params(f"before {i}", i))) for i in range(3)]
    await in_pipeline(gated)
    await queued(engine, 2)
    draining = asyncio.ensure_future(engine.drain(DrainTiming(prestop_seconds=1, drain_seconds=30, grace_seconds=41)))
    await asyncio.sleep(0)  # the drain's first step: it says so at once
    assert engine.readiness() == (False, "draining")
    accepted.append(asyncio.ensure_future(engine.generate(FLUX, params("in the prestop window", 9))))
    await asyncio.sleep(1.2)  # the prestop window (1 s) passes: what is under test, not a synchronisation
    with pytest.raises(Draining, match="refused") as refused:
        await engine.generate(FLUX, params("after the prestop window"))
    assert (refused.value.status, refused.value.code) == (503, "draining")
    assert not draining.done()  # the queue is still there, waiting for the pipeline
    gated.gate.set()
    assert await asyncio.wait_for(draining, 30) is True
    assert [r.images[0].seed for r in await asyncio.gather(*accepted)] == [0, 1, 2, 9]
    assert engine.status()["models"][FLUX]["served"] == 4


async def test_drain_out_of_time_fails_what_is_left_with_503_draining(engine_factory, gated):
    engine = await engine_factory(handler_factory=gated, runtime={"maxBatchSize": 1})
    hold(gated)
    accepted = [asyncio.ensure_future(engine.generate(FLUX, params(f"stuck {i}"))) for i in range(3)]
    await in_pipeline(gated)
    await queued(engine, 2)
    started = asyncio.get_running_loop().time()
    finished = await engine.drain(DrainTiming(prestop_seconds=0, drain_seconds=1, grace_seconds=11))
    assert finished is False and asyncio.get_running_loop().time() - started < 3
    errors = await asyncio.gather(*accepted, return_exceptions=True)
    gated.gate.set()
    assert [(type(e).__name__, e.status, e.code) for e in errors] == [("Draining", 503, "draining")] * 3


async def test_unreadable_weights_fail_that_model_only(engine_factory, tiny_model_dirs, tmp_path):
    broken = tmp_path / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x01")  # truncated header
    engine = Engine(tiny_config({"sdxl": broken, "flux": tiny_model_dirs["flux"]}))
    await engine.start()
    try:
        await wait_until_settled(engine)
        state = {s.name: s for s in engine.model_states()}
        assert state["tiny-sdxl"].state == "failed"
        assert state["tiny-sdxl"].reason.startswith("cannot estimate its memory: ")
        assert state["tiny-flux"].state == "ready"
    finally:
        await engine.stop()
