"""The answers of /health, /models and /status, defined once (pydantic, torch-free): the model
server sends them, the router reads them from its backends and builds its aggregated answers from
them, and both apps' OpenAPI documents describe them. Wire names are snake_case, as the rest of the
HTTP API; defaults and limits take their fields from the one schema (``tinyimg.spec``).

Unknown fields are ignored when reading (a newer server may say more than an older router knows);
to send a new field, add it here, optional, and both sides and the OpenAPI document follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, create_model

from tinyimg.core.quota import Admission
from tinyimg.core.tenants import Tenant
from tinyimg.spec import AdapterSpec, DefaultsSpec, LimitsSpec


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _snake_copy(spec: type[BaseModel], name: str) -> type[Wire]:
    """A snake_case wire model with ``spec``'s fields (the spec's own are camelCase aliases)."""
    fields: dict[str, Any] = {n: (f.annotation, f.default) for n, f in spec.model_fields.items()}
    return create_model(name, __base__=Wire, __doc__=spec.__doc__, **fields)


if TYPE_CHECKING:  # mypy cannot see create_model's fields: to it these are wire models of no fields
    class DefaultsResponse(Wire): ...
    class LimitsResponse(Wire): ...
else:
    DefaultsResponse = _snake_copy(DefaultsSpec, "DefaultsResponse")
    LimitsResponse = _snake_copy(LimitsSpec, "LimitsResponse")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    request_id: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(Wire):
    status: str
    reason: str | None = None


class AdapterInfo(Wire):
    """A LoRA adapter the model declares (spec ``adapters``) and whether it loaded."""

    name: str
    scale: float  # the default scale, when a request names the adapter without one
    state: str  # loading | ready | failed
    reason: str | None = None


def build_adapter_info(adapter: AdapterSpec, model_state: str, failures: Mapping[str, str]) -> AdapterInfo:
    """A declared adapter is ready when its model is and it loaded; it fails alone, with its reason."""
    reason = failures.get(adapter.name) if model_state == "ready" else None
    state = "failed" if reason or model_state == "failed" else model_state
    return AdapterInfo(name=adapter.name, scale=adapter.scale, state=state, reason=reason)


class AccelerationInfo(Wire):
    seconds_per_image: float | None = None  # the model's default request, one image, after warm-up
    quality: float | None = None  # PSNR (dB) against the plain pipeline at one seed; null: nothing accelerated


class ModelInfoResponse(Wire):
    name: str
    family: str | None
    # A Hugging Face repo id, or a local directory: shown only to a caller with a valid API key
    # (null otherwise, and always null from the router), since paths tell an attacker about the host.
    source: str | None
    state: str
    reason: str | None = None
    device: str | None = None
    offload: str | None = None
    # null only from a router that has reached no backend of the model yet
    negative_prompt_supported: bool | None = None
    defaults: DefaultsResponse | None = None
    limits: LimitsResponse | None = None
    # The model's deadline per request (runtime.requestTimeoutSeconds): what a caller, or a router
    # sizing its upstream wait (tinyimg.core.drain.build_upstream_timeout), may expect at most.
    request_timeout_seconds: float | None = None
    # What a request may choose: txt2img/img2img/inpaint, the sampler names (absent: the model's
    # own), and the LoRA adapters (``loras``).
    modes: list[str] | None = None
    schedulers: list[str] | None = None
    adapters: list[AdapterInfo] | None = None
    # Measured at warm-up (tinyimg.runtime.warmup); null until the model has warmed up.
    acceleration: AccelerationInfo | None = None


class ModelsResponse(Wire):
    models: list[ModelInfoResponse]


class DeviceStatus(Wire):
    name: str
    kind: str
    label: str | None = None  # the GPU's product name, or the CPU's core count
    # CPU: the host's total, and as used this process's RSS. GPU: the device's (every process's).
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    # GPU only: this process's share (torch's allocator), and the utilisation where NVML works.
    process_allocated_bytes: int | None = None
    process_reserved_bytes: int | None = None
    utilization_percent: int | None = None


class ResidentAdapterInfo(Wire):
    """An adapter fetched at run time (by URL, or registered) and loaded in the pipeline now."""

    sha256: str
    label: str  # the URL (or the registered name) it was first asked by
    devices: list[str]  # the replicas holding it


class RegisteredAdapterInfo(Wire):
    name: str
    url: str
    sha256: str
    scale: float
    registered_at: float  # Unix time


class ModelAdaptersInfo(Wire):
    """A model's adapters: declared in its spec, registered at run time, and loaded now."""

    declared: list[AdapterInfo]
    registered: list[RegisteredAdapterInfo]
    resident: list[ResidentAdapterInfo]


class AdaptersResponse(Wire):
    models: dict[str, ModelAdaptersInfo]


class ModelStatus(Wire):
    device: str | None = None  # the first replica's
    devices: list[str] | None = None  # one replica per device, fed by one queue
    queue_depth: int = 0
    in_flight: int = 0
    served: int = 0
    failed: int = 0
    state: str | None = None
    reason: str | None = None
    generate_seconds: float = 0.0  # pipeline seconds of the answered requests, ever
    denoise_steps: int = 0  # their denoising steps, ever (with generate_seconds: the time per step)
    resident_adapters: list[ResidentAdapterInfo] = []  # least recently used first, per replica
    adapter_events: dict[str, int] = {}  # run-time adapters: loads, hits, evictions, failures, ever
    startup: dict[str, float] = {}  # startup phase (download, load, compile, warmup) -> seconds
    acceleration: AccelerationInfo | None = None
    shape_recompiles: int = 0  # batches of a compiled model at a shape outside its warm-up buckets, ever


class ProcessStatus(Wire):
    """This process's own usage (not the host's)."""

    rss_bytes: int
    cpu_seconds: float


class TenantStatus(Wire):
    """One tenant's load on this process (tinyimg.core.tenants): a label from the keys file."""

    queued: int = 0
    in_flight: int = 0
    image_steps: float = 0.0  # generated for it, ever: width*height/1024^2*steps*images
    rejected: dict[str, int] = {}  # reason -> refused here, ever


class ConfigStatus(Wire):
    """``tinyimg serve`` following its config file (tinyimg.api.reloader)."""

    generation: int  # 1 at start, +1 each time live settings were applied
    applied_at: float  # unix time of the last application
    restart_needed: list[str] = []  # changed fields only a restart applies (wire paths)
    error: str | None = None  # the file's last change did not parse: why (the running settings stay)


class StatusResponse(Wire):
    uptime_seconds: float
    devices: list[DeviceStatus]
    models: dict[str, ModelStatus]
    process: ProcessStatus | None = None
    tenants: dict[str, TenantStatus] = {}
    config: ConfigStatus | None = None  # null: not following a file (an app built in-process)


# The router's answers: the same per-model shape, plus what only the router knows.


class BackendInfo(Wire):
    name: str
    url: str
    ready: bool
    reachable: bool
    in_flight: int
    queue_depth: int


class RouterModelInfoResponse(ModelInfoResponse):
    ready_replicas: int
    replicas: int
    backends: list[BackendInfo]


class RouterModelsResponse(Wire):
    models: list[RouterModelInfoResponse]


class ModelReadiness(Wire):
    state: str
    ready_replicas: int
    replicas: int


class RouterHealthResponse(HealthResponse):
    mode: str
    models: dict[str, ModelReadiness]
    # With a shared queue: "ok", or "unavailable" (Redis lost: degraded, not dead; /generate works).
    queue: str | None = None


class RouterSelfStatus(Wire):
    mode: str
    uptime_seconds: float
    in_flight: int
    process: ProcessStatus | None = None


class PodStatus(Wire):
    name: str
    url: str
    models: list[str]
    in_flight_from_router: int
    reachable: bool
    status: StatusResponse | None = None
    error: str | None = None


class StatusTotals(Wire):
    queue_depth: int
    in_flight: int
    served: int
    failed: int
    pods: int
    reachable_pods: int
    unreachable_pods: int


class RouterStatusResponse(Wire):
    router: RouterSelfStatus
    pods: list[PodStatus]
    totals: StatusTotals
    tenants: dict[str, TenantStatus] = {}  # summed over the pods that answered


class UsageResponse(Wire):
    """GET /v1/usage: the calling key's tenant, its limits, and how much of them it uses now."""

    tenant: str
    priority: str
    max_queued: int | None = None
    max_in_flight: int | None = None
    image_steps_per_minute: float | None = None
    # The budget now (null without one): image-steps that would be admitted, and the seconds until
    # it is whole again. Shared by every router replica when they share a Redis.
    remaining_image_steps: float | None = None
    reset_seconds: float | None = None
    shared: bool = False  # the budget is counted in Redis for every replica (else in this process)
    queued: int = 0  # waiting on the model servers (as last polled)
    in_flight: int = 0  # generating on the model servers
    image_steps: float = 0.0  # generated for it by the model servers that are up, since each started


def build_usage_response(tenant: Tenant, load: TenantStatus | None, budget: Admission | None,
                         shared: bool) -> UsageResponse:
    load = load or TenantStatus()
    return UsageResponse(
        tenant=tenant.name, priority=tenant.priority, max_queued=tenant.max_queued, max_in_flight=tenant.max_in_flight,
        image_steps_per_minute=tenant.image_steps_per_minute,
        remaining_image_steps=round(budget.remaining, 6) if budget else None,
        reset_seconds=round(budget.reset_seconds, 3) if budget else None, shared=shared,
        queued=load.queued, in_flight=load.in_flight, image_steps=load.image_steps,
    )


def build_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error statuses a route can answer, all in the error shape."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")} for status in statuses}


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing or invalid API key",
    404: "Unknown model",
    408: "Request body too slow",
    413: "Request body too large",
    422: "Invalid input (the field is named)",
    429: "Queue full or rate limited (Retry-After)",
    431: "Request headers too large or too many",
    499: "Client closed the connection",
    500: "Generation failed or internal error",
    502: "Backend answered malformed",
    503: "Not ready or no backend (Retry-After)",
    504: "Deadline passed",
}
# Any route can answer these: the edge refuses a malformed or oversized head before routing,
# and a bug is a JSON 500.
EDGE_ERRORS = (400, 431, 500)
BODY_ERRORS = (408, 413, 422)


class JobImageResponse(Wire):
    url: str
    seed: int
    format: str


class JobErrorResponse(Wire):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    status: int


class JobTimingsResponse(Wire):
    queued_seconds: float | None = None
    inference_seconds: float | None = None


class JobResponse(Wire):
    """A job of ``/v1/jobs``: its state, where to follow it, and (once succeeded) its images."""

    id: str
    model: str
    status: str  # queued | running | succeeded | failed | cancelled
    position: int | None = None  # queued: 1 = next to run
    step: int = 0
    total_steps: int
    eta_seconds: float | None = None  # from the model's recent step times
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    status_url: str
    events_url: str
    parameters: dict[str, Any]
    timings: JobTimingsResponse | None = None
    device: str | None = None
    batch_size: int | None = None
    images: list[JobImageResponse] | None = None
    # One per image, when the model checks content (safety.checker): {flagged, score, checker}.
    content_flags: list[dict[str, Any]] | None = None
    error: JobErrorResponse | None = None
    webhook: str | None = None
    preview: bool = False  # it asked for ``preview`` events


class OpenAIModelResponse(Wire):
    id: str
    object: str = "model"
    created: int
    owned_by: str


class OpenAIModelsResponse(Wire):
    object: str = "list"
    data: list[OpenAIModelResponse]
