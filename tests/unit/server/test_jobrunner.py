"""The job service's background sweep: expired results leave memory with no request at all."""

from __future__ import annotations

import asyncio

from tinyimg.core.jobs import new_job_id
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.jobrunner import JobService
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.spec import JobsConfig

# What a job asked (its images are made up here; only the store's bookkeeping is tested).
PARAMS = GenerationParams("p", None, 64, 64, 2, 0.0, (1,))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class QuietEngine:
    """Only what the service's queue watcher asks of an engine: a queue that never changes."""

    def listen_queue(self) -> asyncio.Event:
        return asyncio.Event()


async def test_expired_results_are_swept_without_any_request():
    clock = Clock()
    service = JobService(QuietEngine(), JobsConfig(result_ttl_seconds=0.2), clock=clock)
    finished, fresh = (JobRecord(new_job_id(), "m", params=PARAMS, output_format="png") for _ in range(2))
    for record in (finished, fresh):
        record.status, record.images = "succeeded", [b"x" * 100]
        service.store.add(record)
    service.store.finish(finished)
    clock.now += 1.0  # past the TTL of the finished one; the other never finished
    service.start()
    try:
        await asyncio.sleep(0.35)  # the sweep runs every half TTL (0.1 s here)
        assert finished.id not in service.store.jobs and fresh.id in service.store.jobs
        assert service.store.result_bytes() == 0
    finally:
        await service.stop()
