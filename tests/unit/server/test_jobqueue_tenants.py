"""The engine's queue with tenants: maxQueued refuses, maxInFlight holds back, the fair head, and
what each tenant's load reads (real ``Job`` entries on a real ``JobQueue``)."""

from __future__ import annotations

import asyncio

import pytest

from tinyimg.core.tenants import Tenant
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.engine import GenerationResult
from tinyimg.runtime.jobqueue import JobQueue, QueueSettings
from tinyimg.runtime.jobs import Job, QueueFull, QuotaExceeded

A = Tenant("a", max_queued=2)
B = Tenant("b", max_in_flight=1)
CHAT = Tenant("chat", priority="interactive")


def entry(tenant: Tenant, size: int = 64, steps: int = 4) -> Job:
    params = GenerationParams("p", None, size, size, steps, 5.0, (1,))
    return Job("m", params, 60.0, asyncio.get_running_loop().create_future(), tenant=tenant)


async def test_max_queued_refuses_the_tenant_with_quota_exceeded_and_admits_the_others():
    queue = JobQueue({"m": QueueSettings(size=10)})
    queue.submit(entry(A))
    queue.submit(entry(A))
    with pytest.raises(QuotaExceeded) as refused:
        queue.submit(entry(A))
    assert (refused.value.status, refused.value.code) == (429, "quota_exceeded")
    assert "maxQueued is 2" in refused.value.message
    queue.submit(entry(B))  # another tenant still gets in
    assert queue.tenant_load()["a"] == {"queued": 2, "in_flight": 0, "image_steps": 0.0, "rejected": {"max_queued": 1}}


async def test_the_model_queue_bound_still_holds_and_counts_against_the_tenant():
    queue = JobQueue({"m": QueueSettings(size=1)})
    queue.submit(entry(B))
    with pytest.raises(QueueFull):
        queue.submit(entry(CHAT))
    assert queue.tenant_load()["chat"]["rejected"] == {"queue_full": 1}


async def test_max_in_flight_holds_a_tenant_back_until_its_running_request_is_released():
    queue = JobQueue({"m": QueueSettings(size=10)})
    first, second = entry(B), entry(B)
    queue.submit(first)
    queue.submit(second)
    assert queue.head(queue.pending) is first
    queue.take([first], among=queue.pending)
    assert queue.head(queue.pending) is None  # b is at its maxInFlight of 1
    other = entry(A)
    queue.submit(other)
    assert queue.head(queue.pending) is other  # a is not held up by b's limit
    first.future.set_result(GenerationResult([], "cpu", 0.0, 0.1, 1))
    queue.release([first])
    assert queue.head([second]) is second
    load = queue.tenant_load()["b"]
    assert (load["queued"], load["in_flight"], load["image_steps"]) == (1, 0, pytest.approx(64 * 64 / 1024**2 * 4))


async def test_the_fair_head_skips_a_flood_and_interactive_goes_first():
    queue = JobQueue({"m": QueueSettings(size=100)})
    flood = [entry(Tenant("a")) for _ in range(20)]
    for job in flood:
        queue.submit(job)
    lone = entry(Tenant("b"))
    queue.submit(lone)
    queue.take([queue.head(queue.pending)], among=list(queue.pending))
    assert queue.head(queue.pending) is lone  # second to start, not 21st
    urgent = entry(CHAT)
    queue.submit(urgent)
    assert queue.head(queue.pending) is urgent


async def test_tenants_named_by_unsigned_headers_are_bounded(monkeypatch):
    monkeypatch.setattr("tinyimg.runtime.jobqueue.MAX_TENANTS", 3)
    queue = JobQueue({"m": QueueSettings(size=100)})
    for i in range(6):
        queue.submit(entry(Tenant(f"t{i}")))
    load = queue.tenant_load()
    assert sorted(load) == ["default", "t0", "t1", "t2"]
    assert load["default"]["queued"] == 3
