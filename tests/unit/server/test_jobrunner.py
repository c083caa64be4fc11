"""The job service's background sweep: expired results leave memory with no request at all."""

from __future__ import annotations

import asyncio

from tests.support.jobrecords import Clock, build_record
from tinyimg.runtime.jobrunner import JobService
from tinyimg.spec import JobsConfig


class QuietEngine:
    """Only what the service's queue watcher asks of an engine: a queue that never changes."""

    def listen_queue(self) -> asyncio.Event:
        return asyncio.Event()


async def test_expired_results_are_swept_without_any_request():
    clock = Clock()
    service = JobService(QuietEngine(), JobsConfig(result_ttl_seconds=0.2), clock=clock)
    finished, fresh = (build_record(model="m") for _ in range(2))
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
