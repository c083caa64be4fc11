"""Jobs in Redis: the shared queue, each job's state and its events (redis-py, asyncio).

Keys (``tinyimg:`` prefix):
- ``queue:<model>``: a stream, one entry per job (``job``: its id), read by the model's pods in the
  consumer group ``pods``. A pod acknowledges an entry only once the job's result is stored; an
  entry a pod took and stopped heartbeating for ``visibilityTimeoutSeconds`` (its pod died) is
  claimed again by another pod (XAUTOCLAIM). Claims are counted in the job's ``attempts``.
- ``job:<id>``: a hash: ``doc`` and ``order`` (``tinyimg.durable.jobdocs``), ``status``,
  ``attempts``, ``entry``. No expiry while it is queued or running; the result TTL once finished.
- ``events:<id>``: a stream of its events; its entry ids are the SSE event ids, so
  ``Last-Event-ID`` resumes on any router replica and across pods.

Every state change goes through one script (``UPDATE``) that refuses to change a finished job:
a pod still running a job that was cancelled, or finished by another pod after a redelivery,
cannot undo that; a job therefore finishes exactly once. Redis errors become 503
``queue_unavailable`` (with ``Retry-After``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import TERMINAL
from tinyimg.durable.jobdocs import StoredJob, cancel_document

GROUP = "pods"
EVENTS_MAXLEN = 1000
POSITION_SCAN = 10_000
CLAIM_EVERY_SECONDS = 1.0  # positions are counted up to this many entries ahead
T = TypeVar("T")

# KEYS: job hash, events stream. ARGV: status, doc JSON, event name ('' = none), event data JSON,
# expiry seconds (0 = none), events kept, order JSON ('' = unchanged). Refuses (0) a job that is
# unknown or already finished.
UPDATE = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current or current == 'succeeded' or current == 'failed' or current == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'doc', ARGV[2])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'order', ARGV[7]) end
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'name', ARGV[3], 'data', ARGV[4])
end
if tonumber(ARGV[5]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
"""


# KEYS: job hash. A claim: the job's attempts go up by one and its fields come back, in one round
# trip; nothing for a job that is gone (expired), so no attempts-only hash is left behind.
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return redis.call('HGETALL', KEYS[1])
"""


# KEYS: job hash, events stream, queue stream. ARGV: doc JSON, order JSON, status, first event name,
# its data JSON, events kept, queue bound. The job, its first event and its queue entry at once (a
# pod that reads the entry always finds the job); returns the entry id, or false when the queue
# already holds its bound (entries are deleted when acknowledged: its length is waiting + taken).
CREATE = """
if redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[7]) then return false end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'order', ARGV[2], 'status', ARGV[3], 'attempts', 0)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'name', ARGV[4], 'data', ARGV[5])
local entry = redis.call('XADD', KEYS[3], '*', 'job', string.sub(KEYS[1], 13))
redis.call('HSET', KEYS[1], 'entry', entry)
return entry
"""


def job_key(job_id: str) -> str:
    return f"tinyimg:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"tinyimg:events:{job_id}"


def queue_key(model: str) -> str:
    return f"tinyimg:queue:{model}"


class QueueUnavailable(ApiError):
    def __init__(self, err: BaseException | str):
        super().__init__(f"the job queue (Redis) cannot be reached: {err}", 503, "queue_unavailable", retry_after=5)


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RedisJobs:
    """One process's handle on the shared jobs (its own connection pool). The password comes from
    the URL, else from ``REDIS_PASSWORD`` (a cluster mounts it from a Secret; a URL sits in a ConfigMap)."""

    def __init__(self, url: str, result_ttl_seconds: float, client: aioredis.Redis | None = None,
                 max_queued: int = 10_000):
        self.url = url
        self.result_ttl = max(1, int(result_ttl_seconds))
        self.max_queued = max_queued
        password: dict[str, Any] = {"password": os.environ["REDIS_PASSWORD"]} if os.environ.get("REDIS_PASSWORD") else {}
        # Event streams each hold a connection while they wait (XREAD BLOCK): the pool is sized
        # past the stream bounds (jobs.maxStreams, the router's --max-streams).
        self.redis = client or aioredis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=3, health_check_interval=15, max_connections=1024, **password,
        )
        self._update = self.redis.register_script(UPDATE)
        self._claim = self.redis.register_script(CLAIM)
        self._create = self.redis.register_script(CREATE)
        self._next_claim: dict[str, float] = {}  # model -> when to look for abandoned entries again
        self._groups: set[str] = set()

    async def close(self) -> None:
        await self.redis.aclose()

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as err:
            raise QueueUnavailable(err) from None

    @asynccontextmanager
    async def _forget_group_when_lost(self, model: str) -> AsyncIterator[None]:
        """A Redis that restarted without its data has no group: made again at the next take."""
        try:
            yield
        except ResponseError as err:
            if "NOGROUP" in str(err):
                self._groups.discard(model)
            raise

    async def call(self, work: Callable[[], Awaitable[T]]) -> T:
        async with self._guard():
            return await work()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    # -- the queue ------------------------------------------------------------------------------
    async def ensure_group(self, model: str) -> None:
        if model in self._groups:
            return
        async with self._guard():
            try:
                await self.redis.xgroup_create(queue_key(model), GROUP, id="0", mkstream=True)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        self._groups.add(model)

    async def create(self, job: StoredJob, event: tuple[str, dict[str, Any]]) -> None:
        """The job's hash, its first event and its queue entry, all at once (one script): a pod
        that reads the entry always finds the job."""
        await self.ensure_group(job.model)
        async with self._guard():
            entry = await self._create(
                keys=[job_key(job.id), events_key(job.id), queue_key(job.model)],
                args=[json.dumps(job.doc), json.dumps(job.order), job.status, event[0], json.dumps(event[1]), EVENTS_MAXLEN,
                      self.max_queued],
            )
        if not entry:
            raise ApiError(f"model {job.model!r}: its shared queue holds {self.max_queued} jobs (jobs.maxQueuedJobs); "
                           "retry later", 429, "queue_full", retry_after=5)
        job.entry = _s(entry)

    async def take(self, model: str, consumer: str, count: int, block_ms: int, min_idle_ms: int) -> list[tuple[str, str]]:
        """Up to ``count`` (entry, job id) for ``consumer``: first those another pod took and let
        go idle past ``min_idle_ms`` (its pod died), else new ones (waiting up to ``block_ms``)."""
        await self.ensure_group(model)
        entries: list[Any] = []
        async with self._guard(), self._forget_group_when_lost(model):
            # Abandoned entries are looked for at most every CLAIM_EVERY seconds: they wait the
            # visibility timeout anyway, and a take then costs one round trip, not two.
            if time.monotonic() >= self._next_claim.get(model, 0.0):
                self._next_claim[model] = time.monotonic() + min(CLAIM_EVERY_SECONDS, min_idle_ms / 3000)
                claimed: Any = await self.redis.xautoclaim(queue_key(model), GROUP, consumer, min_idle_ms, "0-0", count=count)
                entries = claimed[1] if claimed and len(claimed) > 1 else []
                entries = [e for e in entries if e and e[1]]  # a deleted entry comes back as (id, None)
                if len(entries) == count:  # maybe more: look again at the next take
                    self._next_claim[model] = 0.0
            if not entries:
                read: Any = await self.redis.xreadgroup(GROUP, consumer, {queue_key(model): ">"}, count=count, block=block_ms)
                entries = read[0][1] if read else []
        return [(_s(entry_id) or "", _s(fields[b"job"]) or "") for entry_id, fields in entries]

    async def heartbeat(self, model: str, consumer: str, entry: str) -> None:
        """Still working on ``entry``: its idle time starts again (JUSTID: no delivery counted)."""
        async with self._guard():
            await self.redis.xclaim(queue_key(model), GROUP, consumer, 0, [entry], justid=True)

    async def ack(self, model: str, entry: str) -> None:
        """Done with ``entry``: acknowledged and deleted (the stream holds only live entries)."""
        async with self._guard():
            pipe = self.redis.pipeline(transaction=True)
            pipe.xack(queue_key(model), GROUP, entry)
            pipe.xdel(queue_key(model), entry)
            await pipe.execute()

    async def hand_back(self, model: str, entry: str, job_id: str) -> None:
        """Give back an entry this pod took but did not start (it is stopping): made idle past any
        timeout, so the next pod that asks takes it at once, and its attempt is not counted."""
        async with self._guard():
            await self.redis.xclaim(queue_key(model), GROUP, "handed-back", 0, [entry], idle=10**9, justid=True)
            await self.redis.hincrby(job_key(job_id), "attempts", -1)

    async def claim(self, job_id: str) -> StoredJob | None:
        """The job, its attempts counted one up (a pod takes it now); None when it is gone."""
        async with self._guard():
            flat: Any = await self._claim(keys=[job_key(job_id)])
        if not flat:
            return None
        return self._parse(job_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def queue_stats(self, model: str) -> tuple[int, int]:
        """(entries not yet taken, entries taken and not acknowledged) of a model's queue."""
        async with self._guard():
            try:
                groups = await self.redis.xinfo_groups(queue_key(model))
            except ResponseError:  # no stream yet
                return 0, 0
        for group in groups:
            if _s(group.get("name")) == GROUP:
                return int(group.get("lag") or 0), int(group.get("pending") or 0)
        return 0, 0

    async def position(self, model: str, entry: str) -> int | None:
        """1 = the next entry a pod takes; None once taken (or past the counted range)."""
        async with self._guard():
            groups = await self.redis.xinfo_groups(queue_key(model))
            last = next((_s(g.get("last-delivered-id")) for g in groups if _s(g.get("name")) == GROUP), "0-0")
            if _stream_id(entry) <= _stream_id(last or "0-0"):
                return None
            ahead = await self.redis.xrange(queue_key(model), f"({last}", entry, count=POSITION_SCAN)
        return len(ahead) if ahead and _s(ahead[-1][0]) == entry else None

    # -- job state and events -------------------------------------------------------------------
    async def read(self, job_id: str) -> StoredJob | None:
        async with self._guard():
            fields = await self.redis.hgetall(job_key(job_id))
        return self._parse(job_id, fields)

    @staticmethod
    def _parse(job_id: str, fields: Any) -> StoredJob | None:
        if not fields or b"doc" not in fields:
            return None
        return StoredJob(
            job_id, json.loads(fields[b"doc"]), json.loads(fields[b"order"]), _s(fields[b"status"]) or "queued",
            int(fields.get(b"attempts", b"0")), _s(fields.get(b"entry")),
        )

    async def update(self, job: StoredJob, event: tuple[str, dict[str, Any]] | None = None,
                     with_order: bool = False) -> bool:
        """Write ``job``'s status and doc (and an event, and its order) unless it has finished
        meanwhile: False then. A terminal status starts the result TTL of the job and its events."""
        ttl = self.result_ttl if job.status in TERMINAL else 0
        name, data = event if event is not None else ("", {})
        async with self._guard():
            done = await self._update(
                keys=[job_key(job.id), events_key(job.id)],
                args=[job.status, json.dumps(job.doc), name, json.dumps(data), ttl, EVENTS_MAXLEN,
                      json.dumps(job.order) if with_order else ""],
            )
        return bool(done)

    async def publish(self, job_id: str, name: str, data: dict[str, Any]) -> None:
        """An event that changes no state (a preview, a progress tick between document writes)."""
        async with self._guard():
            await self.redis.xadd(events_key(job_id), {"name": name, "data": json.dumps(data)},
                                  maxlen=EVENTS_MAXLEN, approximate=True)

    async def cancel(self, job: StoredJob) -> bool:
        """Cancelled now, unless it has finished; the pod running it hears it at its next heartbeat."""
        job.doc, job.status = cancel_document(job.doc, time.time()), "cancelled"
        return await self.update(job, ("cancelled", {}))

    async def events(self, job_id: str, after: str, block_ms: int) -> list[tuple[str, str, dict[str, Any]]]:
        """Events after the stream id ``after`` ("0" = all), waiting up to ``block_ms`` for one."""
        async with self._guard():
            read: Any = await self.redis.xread({events_key(job_id): after}, count=100, block=block_ms)
        out = []
        for entry_id, fields in read[0][1] if read else []:
            out.append((_s(entry_id) or "", _s(fields[b"name"]) or "", json.loads(fields[b"data"])))
        return out


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms or 0), int(seq or 0)
