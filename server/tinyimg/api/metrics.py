"""Prometheus metrics of one app, in its own registry (several apps can live in one process).

Counters and histograms are updated as things happen (requests by the middleware's observer,
batches by the engine's ``on_batch``); gauges are read from the engine at scrape time, so they
can never drift from what the engine reports in ``/status``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import Scope

from tinyimg.core.tracing import build_exemplar
from tinyimg.http.metrics import render_metrics
from tinyimg.runtime.jobs import EngineStatus, ModelView, TenantLoad
from tinyimg.runtime.jobstore import JobRecord, JobStore
from tinyimg.wire.requests import GENERATION_PATHS

if TYPE_CHECKING:
    from tinyimg.durable.results import ResultStore
    from tinyimg.runtime.redisworker import RedisJobWorker

MODEL_STATES = ("loading", "ready", "failed")
UNKNOWN_MODEL = "unknown"

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
_OUTCOMES = {
    200: "ok",
    401: "unauthorized",
    404: "not_found",
    406: "not_acceptable",
    413: "too_large",
    422: "invalid",
    429: "queue_full",
    499: "disconnected",
    503: "not_ready",
    504: "deadline",
}


def outcome_for_status(status: int) -> str:
    if status in _OUTCOMES:
        return _OUTCOMES[status]
    return "error" if status >= 500 else "rejected"


class EngineCollector(Collector):
    """Gauges computed from the engine's own view at every scrape."""

    def __init__(self, read_status: Callable[[], EngineStatus], read_states: Callable[[], Sequence[ModelView]]):
        self.read_status = read_status
        self.read_states = read_states

    def collect(self) -> Iterator[Metric]:
        status = self.read_status()
        queue = GaugeMetricFamily("tinyimg_queue_depth", "Requests waiting, per model and device.", labels=["model", "device"])
        inflight = GaugeMetricFamily(
            "tinyimg_inflight_requests", "Requests in a pipeline call now (the waiting ones: tinyimg_queue_depth).",
            labels=["model"],
        )
        for name, m in status["models"].items():
            queue.add_metric([name, str(m["device"] or "none")], m["queue_depth"])
            inflight.add_metric([name], m["in_flight"])
        memory = GaugeMetricFamily("tinyimg_device_memory_bytes", "Device memory.", labels=["device", "kind"])
        for d in status["devices"]:
            memory.add_metric([str(d["name"]), "total"], float(str(d.get("memory_total_bytes") or 0)))
            memory.add_metric([str(d["name"]), "used"], float(str(d.get("memory_used_bytes") or 0)))
        state = GaugeMetricFamily("tinyimg_model_state", "1 for the model's current load state.", labels=["model", "state"])
        for s in self.read_states():
            for candidate in MODEL_STATES:
                state.add_metric([s.name, candidate], 1.0 if s.state == candidate else 0.0)
        yield from (queue, inflight, memory, state)
        yield from build_startup_metrics(status)
        yield from build_tenant_metrics(status["tenants"])
        yield from build_adapter_metrics(status)


def build_startup_metrics(status: EngineStatus) -> list[Metric]:
    """Startup phases, the warm-up's measurements and shape recompiles, per model."""
    phases = GaugeMetricFamily("tinyimg_startup_phase_seconds", "Seconds of each startup phase of the model's first"
                               " replica (download, load, compile, warmup).", labels=["model", "phase"])
    speed = GaugeMetricFamily("tinyimg_acceleration_seconds_per_image",
                              "The model's default request, one image, timed at warm-up.", labels=["model"])
    quality = GaugeMetricFamily("tinyimg_acceleration_quality_psnr", "PSNR (dB) of the accelerated pipeline's image"
                                " against the plain one's at warm-up.", labels=["model"])
    recompiles = CounterMetricFamily("tinyimg_shape_recompiles", "Batches of a compiled model at a shape outside its"
                                     " warm-up buckets (each recompiles once).", labels=["model"])
    for name, m in status["models"].items():
        for phase, seconds in m["startup"].items():
            phases.add_metric([name, phase], seconds)
        measured = m["acceleration"] or {}
        if measured.get("seconds_per_image") is not None:
            speed.add_metric([name], float(measured["seconds_per_image"] or 0))
        if measured.get("quality") is not None:
            quality.add_metric([name], float(measured["quality"] or 0))
        recompiles.add_metric([name], m["shape_recompiles"])
    return [phases, speed, quality, recompiles]


def build_adapter_metrics(status: EngineStatus) -> list[Metric]:
    """Counters of run-time adapter events (tinyimg.families.variants.ADAPTER_EVENTS) and the
    resident count, per model (all its replicas)."""
    families = {
        "loads": CounterMetricFamily(
            "tinyimg_adapter_loads", "Run-time LoRA adapters loaded into a pipeline (by URL or registered; not declared ones).",
            labels=["model"]),
        "hits": CounterMetricFamily(
            "tinyimg_adapter_hits", "Batches that named a run-time adapter already loaded in the pipeline.", labels=["model"]),
        "evictions": CounterMetricFamily(
            "tinyimg_adapter_evictions",
            "Run-time adapters deleted from a pipeline to stay within runtime.maxResidentAdapters (or unregistered).",
            labels=["model"]),
        "failures": CounterMetricFamily(
            "tinyimg_adapter_failures", "Run-time adapters that failed to load (the requests naming them failed).",
            labels=["model"]),
    }
    resident = GaugeMetricFamily("tinyimg_adapters_resident", "Run-time adapters loaded now, over the model's replicas.",
                                 labels=["model"])
    for name, m in status["models"].items():
        for kind, family in families.items():
            family.add_metric([name], m["adapter_events"].get(kind, 0))
        resident.add_metric([name], sum(len(a["devices"]) for a in m["resident_adapters"]))
    return [*families.values(), resident]


def build_tenant_metrics(tenants: Mapping[str, TenantLoad]) -> list[Metric]:
    """Per tenant (a label bounded by the keys file): waiting, generating, work served, refusals."""
    queued = GaugeMetricFamily("tinyimg_tenant_queued", "Requests and jobs of the tenant waiting here.", labels=["tenant"])
    inflight = GaugeMetricFamily("tinyimg_tenant_in_flight", "Requests and jobs of the tenant generating here.", labels=["tenant"])
    steps = CounterMetricFamily("tinyimg_tenant_image_steps", "Image-steps generated for the tenant "
                                "(width*height/1024^2*steps*images).", labels=["tenant"])
    rejected = CounterMetricFamily("tinyimg_tenant_rejected", "Requests of the tenant refused here, by reason "
                                   "(max_queued, queue_full).", labels=["tenant", "reason"])
    for name, load in tenants.items():
        queued.add_metric([name], load["queued"])
        inflight.add_metric([name], load["in_flight"])
        steps.add_metric([name], load["image_steps"])
        for reason, count in load["rejected"].items():
            rejected.add_metric([name, reason], count)
    return [queued, inflight, steps, rejected]


class JobsCollector(Collector):
    """Jobs by state, SSE clients and result memory, read from the job store at every scrape."""

    def __init__(self, store: JobStore):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("tinyimg_jobs", "Jobs in the job store, by state.", labels=["state"])
        for state, count in self.store.count_by_status().items():
            jobs.add_metric([state], count)
        clients = GaugeMetricFamily("tinyimg_sse_clients", "Open job event streams (SSE).")
        clients.add_metric([], sum(r.listeners for r in self.store.jobs.values()))
        results = GaugeMetricFamily("tinyimg_job_result_bytes", "Bytes of finished jobs' results held in memory.")
        results.add_metric([], self.store.result_bytes())
        yield from (jobs, clients, results)


class DurableCollector(Collector):
    """The shared queue as this pod sees it (refreshed by its worker every few seconds) and the
    result store's writes."""

    def __init__(self, results: ResultStore | None, worker: RedisJobWorker | None):
        self.results, self.worker = results, worker

    def collect(self) -> Iterator[Metric]:
        if self.results is not None:
            writes = CounterMetricFamily("tinyimg_result_store_writes", "Objects written to the result store, by outcome.",
                                         labels=["outcome"])
            writes.add_metric(["ok"], self.results.writes)
            writes.add_metric(["failed"], self.results.write_failures)
            yield writes
        if self.worker is None:
            return
        entries = GaugeMetricFamily("tinyimg_shared_queue_entries", "Jobs in a model's Redis stream: waiting for a pod, "
                                    "or taken and not yet acknowledged.", labels=["model", "state"])
        for model, (waiting, taken) in self.worker.stats.items():
            entries.add_metric([model, "waiting"], waiting)
            entries.add_metric([model, "taken"], taken)
        counts = self.worker.counts
        redeliveries = CounterMetricFamily("tinyimg_shared_queue_redeliveries",
                                           "Jobs this pod took after a pod that had taken them stopped.")
        redeliveries.add_metric([], counts.redeliveries)
        handed = CounterMetricFamily("tinyimg_shared_queue_handed_back", "Jobs this pod took and gave back unstarted.")
        handed.add_metric([], counts.handed_back)
        lost = CounterMetricFamily("tinyimg_jobs_worker_lost", "Jobs failed worker_lost here (jobs.maxAttempts reached).")
        lost.add_metric([], counts.lost)
        failures = CounterMetricFamily("tinyimg_shared_queue_failures", "Redis errors of the shared queue, by operation.",
                                       labels=["operation"])
        for operation, n in counts.failures.items():
            failures.add_metric([operation], n)
        yield from (entries, redeliveries, handed, lost, failures)


class ServerMetrics:
    def __init__(self, model_names: list[str]):
        self.model_names = frozenset(model_names)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tinyimg_requests", "Generation requests by outcome.", ["model", "outcome"], registry=self.registry
        )
        self.request_duration = Histogram(
            "tinyimg_request_duration_seconds", "Generation request latency, end to end.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.inference_duration = Histogram(
            "tinyimg_inference_duration_seconds", "Pipeline call time.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "tinyimg_batch_size", "Images per pipeline call.", ["model"], buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.images = Counter("tinyimg_images_generated", "Images returned.", ["model"], registry=self.registry)
        self.jobs_finished = Counter(
            "tinyimg_jobs_finished", "Jobs that reached a final state.", ["model", "state"], registry=self.registry
        )
        self.job_queued = Histogram(
            "tinyimg_job_queued_seconds", "Time a job waited in the queue.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.job_generating = Histogram(
            "tinyimg_job_generating_seconds", "Time a job spent generating (pipeline call).", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.webhooks = Counter(
            "tinyimg_webhook_deliveries", "Webhook deliveries by outcome.", ["outcome"], registry=self.registry
        )
        self.adapter_fetches = Counter(
            "tinyimg_adapter_fetches", "Adapter files asked for by URL: downloaded, found in the disk cache, or failed.",
            ["model", "outcome"], registry=self.registry,
        )
        self.adapter_fetch_bytes = Counter(
            "tinyimg_adapter_fetch_bytes", "Bytes of adapter files downloaded.", ["model"], registry=self.registry
        )

    def watch_engine(self, read_status: Callable[[], EngineStatus], read_states: Callable[[], Sequence[ModelView]]) -> None:
        self.registry.register(EngineCollector(read_status, read_states))

    def watch_durable(self, results: ResultStore | None, worker: RedisJobWorker | None) -> None:
        self.registry.register(DurableCollector(results, worker))

    def watch_jobs(self, store: JobStore) -> None:
        self.registry.register(JobsCollector(store))

    def observe_job(self, record: JobRecord) -> None:
        model = self.model_label(record.model)
        self.jobs_finished.labels(model, record.status).inc()
        if record.status == "succeeded":
            self.images.labels(model).inc(len(record.images))
            exemplar = build_exemplar()  # the job's own trace (this runs in its task)
            self.job_queued.labels(model).observe(record.queued_seconds or 0.0, exemplar)
            self.job_generating.labels(model).observe(record.inference_seconds or 0.0, exemplar)

    def count_adapter_fetch(self, model: str, outcome: str, size: int) -> None:
        self.adapter_fetches.labels(self.model_label(model), outcome).inc()
        if size:
            self.adapter_fetch_bytes.labels(self.model_label(model)).inc(size)

    def count_webhook(self, outcome: str) -> None:
        self.webhooks.labels(outcome).inc()

    def model_label(self, name: object) -> str:
        # Only configured names become label values: a client must not grow the series count.
        return name if isinstance(name, str) and name in self.model_names else UNKNOWN_MODEL

    def observe_request(self, scope: Scope, status: int, duration: float) -> None:
        if scope["path"] not in GENERATION_PATHS:
            return
        model = self.model_label(scope.get("state", {}).get("model"))
        self.requests.labels(model, outcome_for_status(status)).inc()
        self.request_duration.labels(model).observe(duration, build_exemplar())

    def observe_batch(self, model: str, images: int, seconds: float) -> None:
        # The worker makes the batch's pipeline span current while it calls this.
        self.inference_duration.labels(self.model_label(model)).observe(seconds, build_exemplar())
        self.batch_size.labels(self.model_label(model)).observe(images)

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def read_metrics(request: Request) -> Response:
    return render_metrics(request.app.state.metrics.registry, request.headers.get("accept"))
