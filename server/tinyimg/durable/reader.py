"""Answering for stored jobs, the same way in the model server and the router: find a job (in
Redis, else its record in the result store), render it with fresh image URLs, cancel it, stream
its events, and serve a capability URL's image (``/v1/files/...``, directory store only)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import JOB_ID, TERMINAL, JobNotFound
from tinyimg.core.quota import LocalQuotas, Quotas
from tinyimg.durable.jobdocs import StoredJob, render_job
from tinyimg.durable.results import DirResultStore, ResultStore, StoredObject, read_image_key, record_key

if TYPE_CHECKING:  # redis-py is loaded only where a Redis is configured
    from tinyimg.durable.redisjobs import RedisJobs

RETRY_MS = 2000
MAX_BLOCK_SECONDS = 10.0
KEEPALIVE = b": keep-alive\n\n"
# A Redis stream id (``<ms>-<seq>``): what this path's events carry in ``id:``.
STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def build_image_response(found: StoredObject, cache_control: str) -> Response:
    """A stored image as an HTTP answer, with its seed (both apps, both routes that serve one)."""
    return Response(found.data, media_type=found.content_type,
                    headers={"X-Seed": found.metadata.get("tinyimg-seed", ""), "Cache-Control": cache_control})


def parse_stream_event_id(value: str | None) -> str:
    """Where a reconnecting stream resumes: the ``Last-Event-ID`` it sent, else the start."""
    return value if value is not None and STREAM_ID.fullmatch(value) else "0"


def format_stream_event(entry: str, name: str, data: dict[str, Any]) -> bytes:
    return f"id: {entry}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class DurableJobs:
    def __init__(self, queue: RedisJobs | None, results: ResultStore | None, url_ttl_seconds: int):
        self.queue, self.results, self.url_ttl = queue, results, url_ttl_seconds

    async def find(self, job_id: str, key_hash: str | None) -> StoredJob | None:
        """The job if it is stored and ``key_hash`` may read it; None when it is not stored
        (404 ``job_not_found`` for another key's job, as for an unknown id)."""
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(job_id)
        try:
            job = await self.queue.read(job_id) if self.queue is not None else None
        except ApiError as err:  # Redis lost: a finished job is still answered from its stored record
            job = await self._read_record(job_id) if err.code == "queue_unavailable" else None
            if job is None:
                raise
        if job is None:
            job = await self._read_record(job_id)
        return job.check_key(key_hash) if job is not None else None

    async def _read_record(self, job_id: str) -> StoredJob | None:
        if self.results is not None:
            found = await self.results.get(record_key(job_id))
            return StoredJob.from_record(json.loads(found.data)) if found is not None else None
        return None

    async def read(self, job_id: str, key_hash: str | None) -> StoredJob:
        job = await self.find(job_id, key_hash)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def urls(self, keys: list[str], base_url: str) -> list[str] | None:
        """Capability URLs of stored images (``base_url``: where a directory store's are served)."""
        if self.results is None or not keys:
            return None
        return [await self.results.url(k, base_url, self.url_ttl) for k in keys]

    async def render(self, job: StoredJob, base_url: str) -> dict[str, Any]:
        urls = await self.urls(job.image_keys, base_url) or []
        position = None
        if job.status == "queued" and job.entry is not None and self.queue is not None:
            position = await self.queue.position(job.model, job.entry)
        return render_job(job, base_url, urls, position)

    async def cancel(self, job: StoredJob) -> StoredJob:
        """Cancelled now; 409 ``job_finished`` when it had already finished (a cancelled one again
        answers its state)."""
        if job.status == "cancelled":
            return job
        if job.finished or self.queue is None or not await self.queue.cancel(job):
            current = await self.queue.read(job.id) if self.queue is not None else job
            status = current.status if current is not None else job.status
            if status == "cancelled" and current is not None:
                return current
            raise ApiError(f"job {job.id} already {status}; nothing to cancel", 409, "job_finished")
        return job

    async def stream(self, job: StoredJob, after: str, keepalive: float) -> AsyncIterator[bytes]:
        """Its events from Redis after ``after``, until its terminal one; a job known only from its
        record in the store gets that one event."""
        yield f"retry: {RETRY_MS}\n\n".encode()
        if self.queue is None:
            yield format_stream_event("0-1", job.status, {})
            return
        while True:
            # A blocked read holds its connection under the client's socket timeout: at most 10 s.
            events = await self.queue.events(job.id, after, int(min(keepalive, MAX_BLOCK_SECONDS) * 1000))
            if not events:
                current = await self.queue.read(job.id)
                if current is None or (current.finished and after != "0"):
                    return  # expired, or its terminal event was before Last-Event-ID
                yield KEEPALIVE
                continue
            for entry, name, data in events:
                yield format_stream_event(entry, name, data)
                after = entry
                if name in TERMINAL:
                    return

    async def image(self, job: StoredJob, index: int) -> StoredObject:
        if job.status != "succeeded":
            raise ApiError(f"job {job.id} is {job.status}; images come once it has succeeded", 409, "job_not_succeeded")
        keys = job.image_keys
        if not 0 <= index < len(keys):
            raise ApiError(f"job {job.id} has {len(keys)} images; no image {index}", 404, "image_not_found")
        assert self.results is not None
        found = await self.results.get(keys[index])
        if found is None:
            raise ApiError(f"job {job.id}: image {index} is no longer stored", 404, "job_expired")
        return found

    async def file(self, key: str, query: str) -> StoredObject:
        """A ``/v1/files/<key>`` URL's image: its signature and expiry checked first (403)."""
        if not isinstance(self.results, DirResultStore):
            raise ApiError("no result directory here: image URLs point at the object store", 404, "not_found")
        self.results.check(read_image_key(key), query)
        found = await self.results.get(key)
        if found is None:
            raise ApiError("this image is no longer stored (its result TTL has passed)", 404, "job_expired")
        return found


def build_quotas(durable: DurableJobs | None) -> Quotas:
    """Tenants' budgets (``tinyimg.core.quota``): in the shared queue's Redis when there is one,
    so every router replica and pod counts one budget; else in this process."""
    if durable is not None and durable.queue is not None:
        from tinyimg.durable.quotas import RedisQuotas

        return RedisQuotas(durable.queue.redis)
    return LocalQuotas()
