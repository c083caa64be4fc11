"""The job store's bounds (TTL, total result bytes) and a job's numbered events, on a fake clock."""

from __future__ import annotations

import pytest

from tests.support.jobrecords import Clock, build_record
from tinyimg.core.jobs import JobExpired, JobNotFound, new_job_id
from tinyimg.runtime.jobstore import EVENT_BYTES, RECORD_OVERHEAD_BYTES, JobRecord, JobStore


def finish(store: JobStore, record: JobRecord, image_bytes: int) -> None:
    record.status, record.images = "succeeded", [b"x" * image_bytes]
    record.publish("succeeded", {})
    store.finish(record)


def one_finished_job(ttl_seconds: float) -> tuple[Clock, JobStore, JobRecord]:
    """A store on a fake clock holding one succeeded job of 10 image bytes."""
    clock = Clock()
    store = JobStore(ttl_seconds=ttl_seconds, max_bytes=10**9, clock=clock)
    record = build_record()
    store.add(record)
    finish(store, record, 10)
    return clock, store, record


def test_a_finished_job_expires_after_its_ttl_and_then_answers_job_expired():
    clock, store, record = one_finished_job(ttl_seconds=60)
    clock.now += 59.9
    assert store.get(record.id) is record
    clock.now += 0.2
    with pytest.raises(JobExpired) as err:
        store.get(record.id)
    assert (err.value.status, err.value.code) == (404, "job_expired")


def test_the_metrics_readings_do_not_count_an_expired_job_and_its_id_stays_taken():
    clock, store, record = one_finished_job(ttl_seconds=60)
    assert store.count_by_status()["succeeded"] == 1 and store.result_bytes() == record.size_bytes
    clock.now += 60
    assert store.count_by_status()["succeeded"] == 0 and store.result_bytes() == 0
    assert record.id not in store.jobs and store.is_taken(record.id)  # a router may not reuse it


def test_an_unknown_id_answers_job_not_found():
    with pytest.raises(JobNotFound) as err:
        JobStore(60, 10**9).get("job_" + "0" * 32)
    assert (err.value.status, err.value.code) == (404, "job_not_found")


def test_over_the_size_bound_the_oldest_finished_jobs_go_first_and_running_ones_never():
    clock = Clock()
    size = 1000 + RECORD_OVERHEAD_BYTES + EVENT_BYTES  # one event: the terminal one
    store = JobStore(ttl_seconds=3600, max_bytes=3 * size, clock=clock)
    running = build_record("running")
    store.add(running)
    finished = []
    for _ in range(4):
        record = build_record()
        store.add(record)
        clock.now += 1
        finish(store, record, 1000)
        finished.append(record)
    assert set(store.jobs) == {running.id, *(r.id for r in finished[1:])}
    with pytest.raises(JobExpired):
        store.get(finished[0].id)
    assert store.result_bytes() == 3 * size
    assert store.count_by_status() == {"queued": 0, "running": 1, "succeeded": 3, "failed": 0, "cancelled": 0}


def test_a_synchronous_job_is_forgotten_once_finished():
    store = JobStore(60, 10**9)
    record = build_record()
    record.keep = False
    store.add(record)
    finish(store, record, 10)
    with pytest.raises(JobNotFound):
        store.get(record.id)


def test_events_are_numbered_from_one_and_replayed_after_an_id():
    record = build_record()
    for name in ("queued", "started", "progress", "succeeded"):
        record.publish(name, {})
    assert [e.id for e in record.events] == [1, 2, 3, 4]
    assert [e.name for e in record.events_after(2)] == ["progress", "succeeded"]


def test_a_job_keeps_only_its_latest_preview_and_none_once_finished():
    store = JobStore(3600, 10**9, Clock())
    record = build_record("running")
    store.add(record)
    record.publish("progress", {"step": 1})
    record.publish("preview", {"step": 1, "images": ["data:image/jpeg;base64,AAAA"]})
    record.publish("progress", {"step": 2})
    record.publish("preview", {"step": 2, "images": ["data:image/jpeg;base64,BBBB"]})
    assert [(e.id, e.name) for e in record.events] == [(1, "progress"), (3, "progress"), (4, "preview")]
    assert [e.id for e in record.events_after(1)] == [3, 4]  # a stream resuming at 1 gets the latest preview
    finish(store, record, 10)
    assert [(e.id, e.name) for e in record.events] == [(1, "progress"), (3, "progress"), (5, "succeeded")]


def test_a_finished_job_keeps_no_decoded_input_image_or_mask():
    from PIL import Image

    from tinyimg.families.base import GenerationParams


    params = GenerationParams("p", None, 64, 64, 4, 5.0, (1,), mode="inpaint", strength=0.5,
                              image=Image.new("RGB", (64, 64)), mask=Image.new("L", (64, 64)))
    store = JobStore(ttl_seconds=60, max_bytes=10**9, clock=Clock())
    record = JobRecord(new_job_id(), "tiny-sdxl", params=params, output_format="png")
    store.add(record)
    record.entry = object()  # the engine's queue entry, which holds the request too
    finish(store, record, 10)
    assert (record.params.image, record.params.mask, record.entry) == (None, None, None)
    assert (record.params.mode, record.params.strength) == ("inpaint", 0.5)  # what the job answer shows stays


def test_eviction_goes_by_finishing_order_and_keeps_running_jobs_and_the_byte_count():
    clock = Clock()
    one = 10 + RECORD_OVERHEAD_BYTES + EVENT_BYTES  # a finished job of 10 image bytes and one event
    store = JobStore(ttl_seconds=60, max_bytes=2 * one + one // 2, clock=clock)
    running = build_record("running")
    store.add(running)
    first, second, third = build_record(), build_record(), build_record()
    for record in (first, second, third):
        store.add(record)
        finish(store, record, 10)
        clock.now += 1
    # Three finished jobs over a bound of two and a half: the oldest goes first.
    assert [r.id in store.jobs for r in (running, first, second, third)] == [True, False, True, True]
    assert store.result_bytes() == sum(r.size_bytes for r in store.jobs.values() if r.finished_mono is not None)
    clock.now += 60
    store.evict()
    assert list(store.jobs) == [running.id] and store.result_bytes() == 0
