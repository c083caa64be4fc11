"""The shared queue's Redis operations against a real redis-server: queue positions, taking in
batches, claiming entries a dead consumer left, counting attempts, finishing exactly once, and
the events a reconnecting stream resumes from."""

from __future__ import annotations

import asyncio

from tinyimg.core.errors import ApiError
from tinyimg.durable.jobdocs import StoredJob
from tinyimg.durable.redisjobs import GROUP, RedisJobs, queue_key


def new_job(n: int) -> StoredJob:
    job_id = f"job_{n:032x}"
    return StoredJob(job_id, {"model": "m", "status": "queued", "created_at": 1.0}, {"key_hash": None}, "queued")


def test_positions_takes_claims_and_one_finish(redis_server):
    async def scenario() -> None:
        jobs = RedisJobs(redis_server.url, 60)
        try:
            created = [new_job(n) for n in range(1, 5)]
            for job in created:
                await jobs.create(job, ("queued", {}))
            assert [await jobs.position("m", j.entry) for j in created] == [1, 2, 3, 4]

            taken = await jobs.take("m", "pod-a", count=2, block_ms=100, min_idle_ms=60_000)
            assert [job_id for _, job_id in taken] == [created[0].id, created[1].id]
            assert [await jobs.position("m", j.entry) for j in created] == [None, None, 1, 2]
            assert await jobs.queue_stats("m") == (2, 2)  # waiting, taken

            first = await jobs.claim(created[0].id)
            assert first is not None and first.attempts == 1
            # pod-a dies holding its second entry: after the idle time another pod claims it.
            await asyncio.sleep(0.3)
            await jobs.heartbeat("m", "pod-a", taken[0][0])  # pod-a still works on its first one
            pod_b = RedisJobs(redis_server.url, 60)
            again = await pod_b.take("m", "pod-b", count=1, block_ms=100, min_idle_ms=200)
            await pod_b.close()
            assert again == [(taken[1][0], created[1].id)]
            assert (await jobs.claim(created[1].id)).attempts == 1
            assert (await jobs.claim(created[1].id)).attempts == 2

            first.status, first.doc = "succeeded", {**first.doc, "status": "succeeded"}
            assert await jobs.update(first, ("succeeded", {"images": 1}))
            cancelled = await jobs.read(created[0].id)
            assert not await jobs.cancel(cancelled)  # finished: a late cancel changes nothing
            assert (await jobs.read(created[0].id)).status == "succeeded"
            assert 0 < await jobs.redis.ttl(f"tinyimg:job:{created[0].id}") <= 60  # the result TTL started

            events = await jobs.events(created[0].id, "0", 100)
            assert [name for _, name, _ in events] == ["queued", "succeeded"]
            assert await jobs.events(created[0].id, events[0][0], 100) == events[1:]  # resumes after an id
            await jobs.ack("m", taken[0][0])
            pending = await jobs.redis.xpending(queue_key("m"), GROUP)
            assert pending["pending"] == 1  # only pod-b's claimed entry is still unacknowledged
            assert await jobs.redis.xlen(queue_key("m")) == 3  # an acknowledged entry leaves the stream
            assert await jobs.claim("job_" + "f" * 32) is None
            assert not await jobs.redis.exists("tinyimg:job:job_" + "f" * 32)  # no attempts-only hash left
        finally:
            await jobs.close()

    asyncio.run(scenario())


def test_a_full_shared_queue_refuses_with_queue_full(redis_server):
    async def scenario() -> None:
        jobs = RedisJobs(redis_server.url, 60, max_queued=2)
        try:
            for n in (1, 2):
                await jobs.create(new_job(n), ("queued", {}))
            try:
                await jobs.create(new_job(3), ("queued", {}))
            except ApiError as err:
                assert (err.status, err.code, err.retry_after) == (429, "queue_full", 5)
                assert "jobs.maxQueuedJobs" in err.message
            else:
                raise AssertionError("a third job was accepted")
            assert await jobs.read(new_job(3).id) is None  # nothing of it was written
            [(entry, _)] = await jobs.take("m", "pod", count=1, block_ms=100, min_idle_ms=60_000)
            await jobs.ack("m", entry)  # one done: room for one more
            await jobs.create(new_job(3), ("queued", {}))
        finally:
            await jobs.close()

    asyncio.run(scenario())
