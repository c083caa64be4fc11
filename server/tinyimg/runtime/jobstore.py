"""Jobs kept in memory: each job's state and its numbered events, and the store that bounds them.

A job is one generation request with an id. Its events (``queued``, ``started``, ``progress``,
``preview``, then exactly one of ``succeeded``/``failed``/``cancelled``) are numbered from 1, so a
stream that reconnects with ``Last-Event-ID`` gets exactly what it missed, except older previews:
a job keeps only its latest ``preview`` (each is kilobytes of JPEG), none once finished. The store keeps
finished jobs for ``result_ttl_seconds`` and their images up to ``max_result_bytes`` all
together: past the bound the oldest finished jobs go first; a queued or running job is never
evicted. Eviction runs whenever the store is used (a job added, finished or looked up, a metrics
scrape), so nothing past its TTL is ever seen. An evicted id is remembered (bounded) so it answers
``job_expired``, not ``job_not_found``.
No torch here; times come from an injected clock so eviction is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import TERMINAL, JobExpired, JobNotFound
from tinyimg.core.tenants import DEFAULT_TENANT, Tenant
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.jobs import Job
from tinyimg.wire.requests import GenerateRequest

# Queued position moves and progress steps: a job has at most one event per step and per move,
# but a long queue could move thousands of times; the oldest non-terminal events go past this.
MAX_EVENTS = 2000
# What a finished job costs besides its images (parameters), and per event kept, counted against the bound.
RECORD_OVERHEAD_BYTES = 2048
EVENT_BYTES = 128


@dataclass
class JobEvent:
    id: int
    name: str
    data: dict[str, Any]


@dataclass(eq=False)
class JobRecord:
    id: str
    model: str
    params: GenerationParams
    output_format: str
    webhook: str | None = None
    key_hash: str | None = None  # sha256 of the API key that created it; reads need the same key
    keep: bool = True  # False: a synchronous /generate, forgotten once its caller has the answer
    durable: bool = False  # taken from the shared queue: stored and answered from Redis, not from here
    preview: bool = False  # wants ``preview`` events while it runs
    request: GenerateRequest | None = None  # what the client sent (a JobRequest for /v1/jobs), as parsed
    tenant: Tenant = DEFAULT_TENANT  # whose it is (a shared queue's taker queues it as theirs)
    created_at: float = field(default_factory=time.time)
    # W3C trace headers of the request that queued it on the shared queue (tinyimg.core.tracing)
    trace_headers: dict[str, str] = field(default_factory=dict)
    audit: dict[str, Any] | None = None  # its audit record, once finished (tinyimg.provenance.audit)
    content_flags: list[dict[str, Any]] | None = None  # one per image when its model checks content (tinyimg.safety)
    base_url: str = ""  # the creating request's, for the job's URLs (and its webhook's)
    # Through a router: the id and base URL its client knows (its webhook carries them), else None.
    public_id: str | None = None
    public_base_url: str | None = None
    status: str = "queued"
    position: int | None = None
    step: int = 0
    total_steps: int = 0
    eta_seconds: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    finished_mono: float | None = None
    queued_seconds: float | None = None
    inference_seconds: float | None = None
    device: str | None = None
    batch_size: int | None = None
    images: list[bytes] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)  # in the result store, once written
    error: ApiError | None = None
    events: list[JobEvent] = field(default_factory=list)
    entry: Job | None = None  # the engine's queue entry, while queued
    task: asyncio.Task[None] | None = None
    last_progress_mono: float = 0.0
    last_step_mono: float | None = None
    started_mono: float | None = None
    _next_event: int = 1
    _listeners: set[asyncio.Event] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def size_bytes(self) -> int:
        return sum(len(b) for b in self.images) + RECORD_OVERHEAD_BYTES + EVENT_BYTES * len(self.events)

    def publish(self, name: str, data: dict[str, Any]) -> JobEvent:
        event = JobEvent(self._next_event, name, data)
        self._next_event += 1
        if name == "preview":  # a newer preview supersedes the older (kilobytes each): keep one
            self.drop_previews()
        self.events.append(event)
        if len(self.events) > MAX_EVENTS:
            del self.events[0]
        for listener in self._listeners:
            listener.set()
        return event

    def drop_previews(self) -> None:
        """Forget the preview events (a stream resuming past them skips them: they are only
        pictures of what came later)."""
        self.events = [e for e in self.events if e.name != "preview"]

    def listen(self) -> asyncio.Event:
        """An event set on every new job event; ``unlisten`` it when done."""
        listener = asyncio.Event()
        self._listeners.add(listener)
        return listener

    def unlisten(self, listener: asyncio.Event) -> None:
        self._listeners.discard(listener)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def events_after(self, last_id: int) -> list[JobEvent]:
        return [e for e in self.events if e.id > last_id]


def drop_inputs(params: GenerationParams) -> GenerationParams:
    """The parameters without their decoded input image and mask (what a finished job keeps)."""
    if params.image is not None or params.mask is not None:
        return dataclasses.replace(params, image=None, mask=None)
    return params


class JobStore:
    def __init__(
        self, ttl_seconds: float, max_bytes: int, clock: Callable[[], float] = time.monotonic,
        remembered: int = 10_000,
    ):
        self.ttl, self.max_bytes, self.clock = ttl_seconds, max_bytes, clock
        self.jobs: dict[str, JobRecord] = {}
        # Finished jobs in the order they finished (the clock is monotonic, so that is also the
        # order of their TTLs): eviction pops from the front, O(1) per job, never a sort.
        self._finished: OrderedDict[str, int] = OrderedDict()  # id -> its size when it finished
        self._finished_bytes = 0
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._remembered = remembered
        self.evicted = 0

    def add(self, record: JobRecord) -> None:
        self.evict()
        self.jobs[record.id] = record

    def get(self, job_id: str) -> JobRecord:
        self.evict()
        record = self.jobs.get(job_id)
        if record is not None:
            return record
        if job_id in self._expired:
            raise JobExpired(job_id)
        raise JobNotFound(job_id)

    def is_taken(self, job_id: str) -> bool:
        """In use, or used and evicted (a new job under it would hide ``job_expired``)."""
        return job_id in self.jobs or job_id in self._expired

    def finish(self, record: JobRecord) -> None:
        """A job reached its terminal state: it starts its TTL and counts against the bound. Its
        inputs go: an img2img or inpaint job's decoded image and mask (megabytes) are not part of
        its result and would otherwise stay for the whole TTL, uncounted."""
        record.finished_mono = self.clock()
        record.drop_previews()  # the images are there now; a kept preview would only take memory
        record.params = drop_inputs(record.params)
        record.entry = None
        if not record.keep:
            self.jobs.pop(record.id, None)
        elif record.id in self.jobs and record.id not in self._finished:
            size = record.size_bytes
            self._finished[record.id] = size
            self._finished_bytes += size
        self.evict()

    def evict(self) -> list[str]:
        """Drop finished jobs past their TTL, then the oldest finished ones while over the bound:
        both from the front of the finishing order (amortised O(1) per job)."""
        now, gone = self.clock(), []
        while self._finished:
            job_id = next(iter(self._finished))
            record = self.jobs.get(job_id)
            expired = record is None or record.finished_mono is None or now - record.finished_mono >= self.ttl
            if not expired and self._finished_bytes <= self.max_bytes:
                break
            gone.append(job_id)
            self._forget(job_id)
        return gone

    def _forget(self, job_id: str) -> None:
        self._finished_bytes -= self._finished.pop(job_id, 0)
        self.jobs.pop(job_id, None)
        self.evicted += 1
        self._expired[job_id] = None
        while len(self._expired) > self._remembered:
            self._expired.popitem(last=False)

    # The two below feed /metrics: they evict first, so a scrape never counts what has expired
    # (and a server nobody calls but Prometheus still frees expired results).
    def result_bytes(self) -> int:
        self.evict()
        return self._finished_bytes

    def count_by_status(self) -> dict[str, int]:
        self.evict()
        counts = dict.fromkeys(("queued", "running", *TERMINAL), 0)
        for record in self.jobs.values():
            counts[record.status] += 1
        return counts

    def active(self) -> list[JobRecord]:
        return [r for r in self.jobs.values() if not r.finished]
