"""The contract between the job service and the engine: what a generation asks and returns, a
queued job, the engine's interface (``EngineApi``: the real engine and the tests' fake both
implement it), and the errors the engine raises (each knows its HTTP status). No torch here; the
one home of ``Job`` and ``GenerationParams``, below the queue, the gather policy and the worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from tinyimg.core.errors import ApiError
from tinyimg.core.status import ModelState
from tinyimg.core.tenants import DEFAULT_TENANT, Tenant, image_steps
from tinyimg.families.base import GeneratedImage, GenerationParams
from tinyimg.spec import ModelSpec

if TYPE_CHECKING:
    from tinyimg.runtime.warmup import WarmupReport


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    device: str
    queued_seconds: float
    inference_seconds: float
    batch_size: int  # images in the pipeline call this request rode in


class JobObserver(Protocol):
    """Told, in the event loop, what happens to one queued request (the jobs API listens)."""

    def started(self) -> None: ...

    def step(self, step: int, total: int) -> None: ...

    # Seconds between previews of this job (tinyimg.runtime.previews); None: it wants none.
    preview_interval: float | None

    def preview(self, data: dict[str, Any]) -> None: ...


@dataclass(eq=False)
class Job:
    """One request in the engine's queue (the entry ``EngineApi.submit`` returns). Batching and
    deadlines come from the model's settings (``spec.runtime``), read where they are used."""

    model: str
    params: GenerationParams
    timeout: float
    future: asyncio.Future[GenerationResult]
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    observer: JobObserver | None = None
    tenant: Tenant = DEFAULT_TENANT  # whose it is: its priority class and its share of the queue
    # The trace context it was submitted in (an OpenTelemetry Context; None when tracing is off):
    # its queue and pipeline spans go there (tinyimg.runtime.batchtrace).
    trace: Any = None
    queue_traced: bool = False  # its queue span is recorded (a batch retried one request at a time records none again)

    @property
    def deadline(self) -> float:
        return self.enqueued_at + self.timeout

    @property
    def cost(self) -> float:
        """Its work in image-steps (``tinyimg.core.tenants.image_steps``)."""
        p = self.params
        return image_steps(p.width, p.height, p.steps, len(p.seeds))


class ModelView(Protocol):
    """What the engine tells about one of its models (``EngineApi.model_states``)."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> ModelSpec: ...
    @property
    def state(self) -> ModelState: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def device(self) -> str | None: ...
    @property
    def offload(self) -> str: ...
    @property
    def adapter_failures(self) -> dict[str, str]: ...
    @property
    def warmup(self) -> WarmupReport | None: ...


class ResidentAdapter(TypedDict):
    """A run-time adapter loaded in the model's pipeline on some of its devices."""

    sha256: str
    label: str  # the URL or the registered name it was first asked by
    devices: list[str]


class ModelLoad(TypedDict):
    device: str | None
    devices: list[str]
    queue_depth: int
    in_flight: int
    served: int
    failed: int
    generate_seconds: float  # pipeline seconds of the answered requests, ever
    denoise_steps: int  # their denoising steps, ever
    resident_adapters: list[ResidentAdapter]
    adapter_events: dict[str, int]  # loads, hits, evictions, failures of run-time adapters, ever
    startup: dict[str, float]  # startup phase (download, load, compile, warmup) -> seconds, first replica
    acceleration: dict[str, float | None] | None  # seconds_per_image, quality (PSNR dB); None: not warmed yet
    shape_recompiles: int  # batches of a compiled model at a shape its warm-up did not run, ever


class TenantLoad(TypedDict):
    queued: int  # waiting here now
    in_flight: int  # generating here now
    image_steps: float  # generated for it here, ever (tinyimg.core.tenants.image_steps)
    rejected: dict[str, int]  # reason (max_queued, queue_full) -> refused here, ever


class EngineStatus(TypedDict):
    uptime_seconds: float
    devices: list[dict[str, object]]  # tinyimg.runtime.devices.read_device_status
    models: dict[str, ModelLoad]
    tenants: dict[str, TenantLoad]  # every tenant seen (tinyimg.runtime.jobqueue)


class EngineApi(Protocol):
    """The engine as the job service and the routes use it (tinyimg.runtime.engine.Engine)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def check_admits(self, model: str) -> None: ...
    async def apply_model_spec(self, spec: ModelSpec) -> None: ...
    async def drop_adapters(self, model: str, names: set[str]) -> None: ...
    def submit(self, model: str, params: GenerationParams, timeout: float | None = None,
               observer: JobObserver | None = None, tenant: Tenant = DEFAULT_TENANT) -> Job: ...
    async def wait(self, job: Job) -> GenerationResult: ...
    def cancel(self, job: Job) -> None: ...
    def position(self, job: Job) -> int | None: ...
    def listen_queue(self) -> asyncio.Event: ...
    def is_draining(self) -> bool: ...
    def readiness(self) -> tuple[bool, str]: ...
    def model_states(self) -> Sequence[ModelView]: ...
    def status(self) -> EngineStatus: ...


class EngineError(ApiError):
    """An error the engine raises; it carries its HTTP answer (tinyimg.core.errors.ApiError)."""

    def __init__(self, message: str, status: int = 500, code: str = "generation_failed",
                 retry_after: float | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message, status, code, retry_after, extra)


class ModelNotFound(EngineError):
    def __init__(self, model: str, known: list[str]):
        super().__init__(
            f"unknown model {model!r}; known models: {', '.join(known) or 'none'}", 404, "model_not_found"
        )


class ModelNotReady(EngineError):
    def __init__(self, model: str, reason: str, retry_after: float = 5.0):
        super().__init__(f"model {model!r} is not ready: {reason}", 503, "model_not_ready", retry_after)


class Draining(EngineError):
    """The server is shutting down: refused before it was queued, or left unfinished when the
    drain ran out of time. Retryable: another replica of the model can answer it."""

    # Another replica behind the same Service can take the request at once.
    RETRY_AFTER = 1.0

    def __init__(self, model: str, what: str = "refused"):
        super().__init__(
            f"model {model!r}: request {what}, this server is shutting down; retry on another replica",
            503, "draining", self.RETRY_AFTER,
        )


class QueueFull(EngineError):
    def __init__(self, where: str, size: int, retry_after: float = 1.0):
        super().__init__(
            f"queue for {where} is full ({size} waiting); retry later", 429, "queue_full", retry_after
        )


class QuotaExceeded(EngineError):
    """A tenant's own limit (``maxQueued``), not the model's: other tenants are still admitted."""

    def __init__(self, tenant: str, what: str, retry_after: float = 1.0):
        super().__init__(f"tenant {tenant!r}: {what}; retry later", 429, "quota_exceeded", retry_after,
                         extra={"tenant": tenant})


class DeadlineExceeded(EngineError):
    def __init__(self, seconds: float, where: str):
        super().__init__(f"deadline of {seconds:.1f}s passed while {where}", 504, "deadline_exceeded")


class GenerationFailed(EngineError):
    def __init__(self, message: str, code: str = "generation_failed"):
        super().__init__(message, 500, code)
