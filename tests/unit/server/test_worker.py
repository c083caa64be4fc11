"""One device worker driven directly, with a small handler standing in for a pipeline (the worker
only calls ``handler.generate``; the real pipelines run in tests/integration/server). Covers what
the engine tests cannot reach with a real pipeline: failure forms, and the queue changing while
the worker waits for batch mates."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref

import pytest
import torch

from tinyimg.families.base import GeneratedImage, GenerationParams
from tinyimg.runtime import worker as worker_module
from tinyimg.runtime.devices import is_out_of_memory
from tinyimg.runtime.jobqueue import CompanyGather, JobQueue, QueueSettings
from tinyimg.runtime.jobs import GenerationFailed, Job
from tinyimg.runtime.worker import DeviceWorker


class RecordingHandler:
    """Answers one blank image per seed and records the prompts of each call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def generate(self, batch: list[GenerationParams], should_stop=None) -> list[list[GeneratedImage]]:
        self.calls.append([p.prompt for p in batch])
        return [[GeneratedImage(None, seed) for seed in p.seeds] for p in batch]


class OutOfMemoryHandler(RecordingHandler):
    """A call with the prompt "too big" holds a tensor in its frame (like a pipeline's activations)
    and runs out of memory, tiled or not."""

    def __init__(self) -> None:
        super().__init__()
        self.held: weakref.ref | None = None
        self.tries: list[tuple[list[str], bool]] = []

    def generate(self, batch, should_stop=None, tiled=False):
        self.tries.append(([p.prompt for p in batch], tiled))
        if any(p.prompt == "too big" for p in batch):
            activations = torch.zeros(1024)
            self.held = weakref.ref(activations)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(batch, should_stop)


class MiscountingHandler(RecordingHandler):
    """A handler bug: one answer for a batch of two requests, on the first call only."""

    def generate(self, batch, should_stop=None):
        answers = super().generate(batch, should_stop)
        return answers[:1] if len(self.calls) == 1 else answers


def make_params(prompt: str, steps: int = 2) -> GenerationParams:
    return GenerationParams(prompt, None, 64, 64, steps, 0.0, (1,), request_id=f"req-{prompt}")


def make_job(prompt: str, *, steps: int = 2, timeout: float = 30.0, model: str = "m") -> Job:
    return Job(model, make_params(prompt, steps), timeout, asyncio.get_running_loop().create_future())


def make_queue(max_batch: int = 4, max_wait: float = 0.0, **others: QueueSettings) -> JobQueue:
    """Model "m" (up to 8 waiting) with these batching settings, and ``others`` beside it."""
    return JobQueue({"m": QueueSettings(8, max_batch, max_wait), **others})


class GatheringSeen(CompanyGather):
    """The default gather policy, telling the test when a head first decides to wait for mates."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()

    def wait_seconds(self, now, head, pending, settings, *, free_since, returning):
        left = super().wait_seconds(now, head, pending, settings, free_since=free_since, returning=returning)
        if left > 0:
            self.waiting.set()
        return left


def make_worker(handler, device: str = "cpu", queue: JobQueue | None = None, *, max_batch: int = 4,
                max_wait: float = 0.0, **options) -> DeviceWorker:
    worker = DeviceWorker(device, queue or make_queue(max_batch, max_wait), **options)
    worker.handlers["m"] = handler
    worker.start()
    return worker


@pytest.fixture
async def start_worker():
    workers = []

    def start(handler, **options) -> DeviceWorker:
        worker = make_worker(handler, **options)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.stop(lambda job: GenerationFailed("stopped"), grace=5)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        pytest.param(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), True,
                     id="torch-oom-class"),
        pytest.param(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)"), True,
                     id="runtime-error-old-torch"),
        pytest.param(RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
                     True, id="runtime-error-cuda-kernel"),
        pytest.param(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True,
                     id="runtime-error-cublas"),
        pytest.param(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"), False,
                     id="runtime-error-other"),
        pytest.param(ValueError("CUDA out of memory"), False, id="not-a-runtime-error"),
    ],
)
def test_is_out_of_memory_knows_the_class_and_the_runtime_error_forms(err, expected):
    assert is_out_of_memory(err) is expected


async def test_out_of_memory_frees_the_failed_calls_tensors_before_emptying_the_cache(start_worker, monkeypatch):
    # No CUDA here, so the real release is a no-op: record instead whether the failed call's
    # tensors were already gone when the cache was emptied, and on which thread it ran.
    released = []
    monkeypatch.setattr(worker_module, "release_cuda_cache",
                        lambda: released.append((handler.held() is None, threading.current_thread().name)))
    handler = OutOfMemoryHandler()
    worker = start_worker(handler)
    failing = make_job("too big")
    worker.queue.submit(failing)
    with pytest.raises(GenerationFailed) as failed:
        await failing.future
    assert failed.value.code == "out_of_memory" and "out of GPU memory on cpu" in failed.value.message
    after = make_job("fine afterwards")
    worker.queue.submit(after)
    assert [i.seed for i in (await after.future).images] == [1]
    assert handler.calls == [["fine afterwards"]]
    # One image: tried as it is, then with VAE tiling, then failed.
    assert handler.tries == [(["too big"], False), (["too big"], True), (["fine afterwards"], False)]
    # After each try, on the device's thread, with the tensors gone although the caller still holds the exception.
    assert released == [(True, "tinyimg-cpu_0")] * 2


async def test_a_handler_answering_too_few_results_is_retried_one_request_at_a_time(start_worker):
    handler = MiscountingHandler()
    worker = start_worker(handler, max_batch=2, max_wait=0.5)
    pair = [make_job(name) for name in ("a", "b")]
    for job in pair:
        worker.queue.submit(job)
    for job in pair:
        assert [i.seed for i in (await job.future).images] == [1]
    after = make_job("c")
    worker.queue.submit(after)
    assert len((await after.future).images) == 1
    assert handler.calls == [["a", "b"], ["a"], ["b"], ["c"]]


class PoisonedHandler(RecordingHandler):
    """Fails every call that carries the prompt "poison", as a tokenizer fails on text it cannot encode."""

    def generate(self, batch, should_stop=None):
        answers = super().generate(batch, should_stop)
        if any(p.prompt == "poison" for p in batch):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return answers


async def submit_batch(worker: DeviceWorker, prompts: list[str]) -> list[Job]:
    """One batch of ``prompts`` (the worker's max batch fits them all)."""
    jobs = [make_job(prompt) for prompt in prompts]
    for job in jobs:
        worker.queue.submit(job)
    await asyncio.wait([job.future for job in jobs])
    return jobs


async def test_a_failing_batch_fails_only_the_request_that_fails_alone(start_worker):
    handler = PoisonedHandler()
    batches = []
    worker = make_worker(handler, max_batch=3, max_wait=0.5,
                         on_batch=lambda model, images, seconds: batches.append(images))
    try:
        first, poison, last = await submit_batch(worker, ["first", "poison", "last"])
    finally:
        await worker.stop(lambda job: GenerationFailed("stopped"), grace=5)
    assert handler.calls == [["first", "poison", "last"], ["first"], ["poison"], ["last"]]
    assert [i.seed for i in first.future.result().images] == [1]
    assert [i.seed for i in last.future.result().images] == [1]
    assert first.future.result().batch_size == 1  # it was answered by its own call
    failed = poison.future.exception()
    assert isinstance(failed, GenerationFailed) and failed.code == "generation_failed"
    assert "TypeError: TextEncodeInput" in failed.message
    assert batches == [1, 1]  # only the calls that made images count as batches


async def test_out_of_memory_splits_the_batch_and_fails_only_the_image_that_fails_alone(start_worker, monkeypatch):
    monkeypatch.setattr(worker_module, "release_cuda_cache", lambda: None)
    handler = OutOfMemoryHandler()
    worker = start_worker(handler, max_batch=2, max_wait=0.5)
    big, fine = await submit_batch(worker, ["too big", "b"])
    assert big.future.exception().code == "out_of_memory"
    assert [i.seed for i in fine.future.result().images] == [1]
    assert handler.tries == [(["too big", "b"], False), (["too big"], False), (["too big"], True), (["b"], False)]


async def test_a_caller_that_left_during_the_failed_call_is_not_retried(start_worker):
    handler = PoisonedHandler()
    worker = start_worker(handler, max_batch=3, max_wait=0.5)
    jobs = [make_job(prompt) for prompt in ("gone", "poison", "kept")]
    for job in jobs:
        worker.queue.submit(job)
    jobs[0].future.cancel()  # hung up before the batch ran
    await asyncio.wait([jobs[1].future, jobs[2].future])
    assert handler.calls == [["gone", "poison", "kept"], ["poison"], ["kept"]]
    assert len(jobs[2].future.result().images) == 1


async def queue_behind_a_withdrawn_head(worker: DeviceWorker, gather: GatheringSeen, behind_model: str = "m") -> Job:
    """A head of "m" that waits for mates, a job behind it that cannot ride with it (other step
    count, or ``behind_model``); the head's caller hangs up while the worker gathers. Returns the
    job behind."""
    worker.queue.answered("m", 3)  # three clients were just answered: a head waits for them to come back
    gone = make_job("gone", steps=3)
    behind = make_job("behind", model=behind_model)
    worker.queue.submit(gone)
    worker.queue.submit(behind)
    await asyncio.wait_for(gather.waiting.wait(), 5)  # the worker is gathering mates for "gone"
    worker.queue.withdraw(gone)
    assert not gone.future.done()
    return behind


async def test_a_head_withdrawn_while_gathering_lets_the_next_head_gather_its_own_mates(start_worker):
    handler, gather = RecordingHandler(), GatheringSeen()
    worker = start_worker(handler, max_wait=0.4, gather=gather)
    behind = await queue_behind_a_withdrawn_head(worker, gather)
    mate = make_job("mate")
    worker.queue.submit(mate)
    await asyncio.gather(behind.future, mate.future)
    assert handler.calls == [["behind", "mate"]]


async def test_a_withdrawn_head_does_not_hold_the_next_job_for_its_own_wait(start_worker):
    # The head's model waits up to 20 s for mates; the job behind it is of a model that waits for none.
    handler, gather = RecordingHandler(), GatheringSeen()
    queue = make_queue(max_wait=20.0, other=QueueSettings(8, 4, 0.0))
    worker = start_worker(handler, queue=queue, gather=gather)
    worker.handlers["other"] = handler
    behind = await queue_behind_a_withdrawn_head(worker, gather, behind_model="other")
    result = await asyncio.wait_for(behind.future, 2.0)
    assert result.queued_seconds < 1.0
    assert handler.calls == [["behind"]]


class AskingHandler(RecordingHandler):
    """Waits for ``release``, then records what ``should_stop`` says (as a pipeline step would)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()
        self.answers: list[bool] = []

    def generate(self, batch, should_stop=None):
        self.entered.set()
        self.release.wait(10)
        self.answers.append(should_stop())
        return super().generate(batch, should_stop)


async def test_the_pipeline_is_told_to_stop_once_every_caller_of_its_batch_gave_up(start_worker):
    handler = AskingHandler()
    worker = start_worker(handler)
    abandoned = make_job("abandoned")
    worker.queue.submit(abandoned)
    assert await asyncio.to_thread(handler.entered.wait, 5)  # the batch is in the pipeline
    abandoned.future.cancel()  # what the engine's deadline or a hang-up does to a running job
    handler.release.set()
    kept = make_job("kept")
    worker.queue.submit(kept)
    await kept.future
    assert handler.answers == [True, False]


async def test_a_failing_on_batch_hook_does_not_stop_the_worker():
    calls = []

    def broken_hook(model, images, seconds):
        calls.append((model, images))
        raise RuntimeError("metrics backend gone")

    handler = RecordingHandler()
    worker = make_worker(handler, on_batch=broken_hook)
    try:
        first, second = make_job("first"), make_job("second")
        worker.queue.submit(first)
        assert (await first.future).images[0].seed == 1
        worker.queue.submit(second)
        assert (await second.future).images[0].seed == 1
        assert calls == [("m", 1), ("m", 1)]
    finally:
        await worker.stop(lambda job: GenerationFailed("stopped"), grace=5)


class SlowHandler(RecordingHandler):
    """Takes ``seconds`` per call (on the device's thread, as a pipeline does)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def generate(self, batch, should_stop=None):
        time.sleep(self.seconds)
        return super().generate(batch, should_stop)


async def test_one_queue_feeds_whichever_replica_is_free():
    queue = make_queue(max_batch=1)
    slow, fast = SlowHandler(1.0), RecordingHandler()
    workers = [make_worker(slow, "cuda:0", queue), make_worker(fast, "cuda:1", queue)]
    try:
        jobs = [make_job(f"p{i}") for i in range(5)]
        for job in jobs:
            queue.submit(job)
        results = await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), 10)
    finally:
        for worker in workers:
            await worker.stop(lambda job: GenerationFailed("stopped"), grace=5)
    # cuda:0 is busy with the first job for a second; cuda:1 serves the rest meanwhile.
    assert [r.device for r in results] == ["cuda:0", "cuda:1", "cuda:1", "cuda:1", "cuda:1"]
    assert slow.calls == [["p0"]] and fast.calls == [["p1"], ["p2"], ["p3"], ["p4"]]


async def test_a_worker_takes_only_the_models_it_holds_a_replica_of():
    queue = make_queue(other=QueueSettings(8, 4))
    handler = RecordingHandler()
    worker = make_worker(handler, "cuda:0", queue)
    try:
        foreign = make_job("not mine", model="other")
        mine = make_job("mine")
        queue.submit(foreign)
        queue.submit(mine)
        await asyncio.wait_for(mine.future, 5)
        assert handler.calls == [["mine"]]
        assert queue.pending == [foreign]
    finally:
        await worker.stop(lambda job: GenerationFailed("stopped"), grace=5)
    assert not foreign.future.done()  # another worker's model: this worker's stop leaves it alone


async def test_a_lone_request_at_an_idle_device_runs_at_once_whatever_its_max_wait(start_worker):
    handler = RecordingHandler()
    worker = start_worker(handler, max_wait=5.0)
    lone = make_job("lone")
    worker.queue.submit(lone)
    result = await asyncio.wait_for(lone.future, 2.0)
    assert result.queued_seconds < 0.5
    # Its client coming back is not company either: it is the only one, so it runs at once too.
    again = make_job("again")
    worker.queue.submit(again)
    assert (await asyncio.wait_for(again.future, 2.0)).queued_seconds < 0.5
    assert handler.calls == [["lone"], ["again"]]


async def test_a_request_waits_for_the_other_clients_of_the_batch_just_answered(start_worker):
    handler = RecordingHandler()
    worker = start_worker(handler, max_wait=5.0)
    first = [make_job(name) for name in ("x", "y")]
    for job in first:
        worker.queue.submit(job)
    await asyncio.gather(*(job.future for job in first))
    back = make_job("x again")
    worker.queue.submit(back)
    await asyncio.sleep(0.2)  # long enough to see it wait (a negative check, not a synchronisation)
    assert not back.future.done()  # y's client is expected back: x waits for it
    other = make_job("y again")
    worker.queue.submit(other)
    results = await asyncio.wait_for(asyncio.gather(back.future, other.future), 2.0)
    assert handler.calls == [["x", "y"], ["x again", "y again"]]
    assert results[1].queued_seconds < 0.5  # the last one expected back: the batch ran at once
    assert results[0].queued_seconds < 1.0  # well under its max wait of 5 s


def test_a_client_not_back_within_max_wait_is_no_longer_expected():
    queue = make_queue(max_wait=0.05)
    queue.answered("m", 2, now=100.0)
    assert list(queue.returning("m", now=100.04)) == [100.05, 100.05]
    assert list(queue.returning("m", now=100.06)) == []
    assert list(queue.returning("other", now=100.0)) == []


def test_each_new_request_counts_as_one_answered_client_back():
    queue = make_queue(max_wait=60.0, other=QueueSettings(8, 4, 60.0))
    queue.answered("m", 2)
    queue.submit(Job("other", make_params("o"), 30.0, None))
    assert len(queue.returning("m")) == 2  # another model's request is not one of them
    queue.submit(Job("m", make_params("a"), 30.0, None))
    assert len(queue.returning("m")) == 1
