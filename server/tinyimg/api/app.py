"""The model server's app factory: routes, error shape, middleware, metrics, engine lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

import tinyimg
from tinyimg import ui
from tinyimg.api import adapters, edits, files, generate, health, info, jobs, metrics, openai_images, usage
from tinyimg.api.deps import load_api_keys
from tinyimg.api.metrics import ServerMetrics
from tinyimg.api.reloader import ConfigReloader, ConfigSource
from tinyimg.core.auth import build_auth_failure_limiter
from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import read_job_secret
from tinyimg.durable.reader import DurableJobs, build_quotas
from tinyimg.durable.results import ResultStore, build_result_store
from tinyimg.http.edge import install_edge
from tinyimg.http.limits import EdgeLimits
from tinyimg.http.streams import StreamGate, StreamLimits
from tinyimg.http.tracing import FASTAPI_TELEMETRY
from tinyimg.provenance.manifest import SigningKey, SigningKeyError, load_signing_key
from tinyimg.provenance.support import check_provenance_support
from tinyimg.runtime.adapters import AdapterLibrary
from tinyimg.runtime.jobrunner import JobService
from tinyimg.runtime.jobs import EngineApi
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.jobviews import build_webhook_payload
from tinyimg.runtime.webhooks import WebhookSender
from tinyimg.spec import ConfigError, ServerConfig
from tinyimg.termination import TerminationLog

log = logging.getLogger("tinyimg.api")

ROUTERS = (
    generate.router, jobs.router, files.router, openai_images.router, edits.router, info.router, usage.router,
    adapters.router, health.router, metrics.router, ui.router,
)


def build_engine(config: ServerConfig, server_metrics: ServerMetrics, options: Mapping[str, Any],
                 termination_log: Path | None = None) -> EngineApi:
    from tinyimg.runtime.engine import Engine

    termination = TerminationLog(termination_log)

    def on_state(model: str, state: str, reason: str | None) -> None:
        log.info("model %s is %s", model, state, extra={"model": model, "state": state})
        termination.record(model, state, reason)

    return Engine(config, on_batch=server_metrics.observe_batch, on_state=on_state, **options)


def build_durable(config: ServerConfig, results: ResultStore | None) -> DurableJobs:
    """The shared queue (``jobs.redisUrl``) and the result store: ``results`` when given, else the
    one ``jobs.resultStore`` names; unset, none (only ``tinyimg serve`` defaults it to a directory)."""
    jobs_config = config.jobs_config()
    if results is None and jobs_config.result_store is not None:
        try:
            results = build_result_store(jobs_config.result_store)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if jobs_config.redis_url is not None and results is None:
        raise ConfigError("jobs.redisUrl is set but jobs.resultStore is not: shared jobs store their results")
    queue = None
    if jobs_config.redis_url is not None:
        from tinyimg.durable.redisjobs import RedisJobs

        queue = RedisJobs(jobs_config.redis_url, jobs_config.result_ttl_seconds, max_queued=jobs_config.max_queued_jobs)
    return DurableJobs(queue, results, jobs_config.url_ttl_seconds)


def build_consumer_name() -> str:
    """This process in the queue's consumer group: its pod (or host) name and a random part."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{secrets.token_hex(4)}"


def build_adapter_library(config: ServerConfig, server_metrics: ServerMetrics) -> AdapterLibrary:
    """Where adapters named by URL go: ``adapterCacheDir``, else beside the models (HF_HOME: the
    model-cache volume in a cluster), else the user's cache; s3:// from the jobs' S3 endpoint."""
    if config.adapter_cache_dir is not None:
        root = Path(config.adapter_cache_dir).expanduser()
    elif os.environ.get("HF_HOME"):
        root = Path(os.environ["HF_HOME"]) / "tinyimg-adapters"
    else:
        root = Path("~/.cache/tinyimg/adapters").expanduser()
    store = config.jobs_config().result_store
    s3 = store.s3 if store is not None else None
    options = {"region": s3.region, **({"endpoint": s3.endpoint} if s3.endpoint else {})} if s3 is not None else {}
    return AdapterLibrary(root, options, on_fetch=server_metrics.count_adapter_fetch)


def build_signing_key(config: ServerConfig) -> SigningKey | None:
    """The C2PA signing key when the config names one (ConfigError when it cannot be used)."""
    check_provenance_support(config)  # at start: a missing library is refused, not a failed first job
    if not (config.c2pa_cert_file and config.c2pa_key_file):
        return None
    try:
        return load_signing_key(config.c2pa_cert_file, config.c2pa_key_file)
    except SigningKeyError as err:
        raise ConfigError(str(err)) from None


def build_job_service(config: ServerConfig, engine: EngineApi, server_metrics: ServerMetrics,
                      durable: DurableJobs | None = None) -> JobService:
    """The jobs service with its metrics, webhook sender, result store and shared queue wired in."""
    jobs_config = config.jobs_config()
    webhooks = WebhookSender(jobs_config, on_outcome=server_metrics.count_webhook)

    async def build_payload(record: JobRecord) -> dict[str, object]:
        # Stored images by their capability URLs, when whoever the client knows serves them: this
        # server (no router in front), or any pod or router of a shared queue (they share the
        # store). A pod of its own behind a router leaves the router's keyed image route.
        try:
            urls = None
            if durable is not None and (record.durable or record.public_base_url is None):
                urls = await durable.urls(record.image_keys, record.public_base_url or record.base_url)
        except ApiError as err:  # the store cannot sign now: the job's keyed image route instead
            log.warning("webhook without image URLs: %s", err.message, extra={"job_id": record.id})
            urls = None
        return build_webhook_payload(record, urls)

    def deliver(record: JobRecord) -> None:
        if record.webhook is not None:  # msg_<this server's id>: stable over retries, no '.' in it
            webhooks.schedule(record.webhook, f"msg_{record.id}", build_payload(record))

    service = JobService(engine, jobs_config, models=config.models, on_finish=server_metrics.observe_job,
                         deliver_webhook=deliver, webhooks=webhooks,
                         results=durable.results if durable else None, queue=durable.queue if durable else None,
                         quotas=build_quotas(durable), adapters=build_adapter_library(config, server_metrics),
                         signing=build_signing_key(config))
    server_metrics.watch_jobs(service.store)
    return service


SWEEP_SECONDS = 60.0


async def sweep_results(durable: DurableJobs, ttl_seconds: float) -> None:
    """The result store's TTL: expired jobs leave it every minute (a bucket lifecycle rule may do
    the same; both are harmless together)."""
    while durable.results is not None:
        try:
            removed = await durable.results.sweep(ttl_seconds)
        except ApiError as err:
            log.warning("result sweep failed: %s", err.message)
        else:
            if removed:
                log.info("result sweep", extra={"removed": removed})
        await asyncio.sleep(SWEEP_SECONDS)


def build_revision_header(revision: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """``X-Tinyimg-Revision`` on every answer when the operator named the pod's weight revision
    (TINYIMG_REVISION): which weights made an image, during a canary rollout too."""
    if not revision or not (revision.isascii() and revision.isalnum()) or len(revision) > 64:
        return ()
    return ((b"x-tinyimg-revision", revision.encode("ascii")),)


def build_edge_limits(config: ServerConfig) -> EdgeLimits:
    defaults = EdgeLimits()
    return EdgeLimits(
        max_body_bytes=config.max_body_bytes, max_body_bytes_total=config.max_body_bytes_total,
        max_connections=config.max_connections or defaults.max_connections
    )


def create_app(
    config: ServerConfig, engine: EngineApi | None = None, *, engine_options: Mapping[str, Any] | None = None,
    termination_log: Path | None = None, results: ResultStore | None = None, config_source: ConfigSource | None = None,
) -> FastAPI:
    """An app serving ``config``'s models. Without ``engine`` it builds one (``engine_options`` go
    to its constructor, e.g. ``devices`` or ``handler_factory``) wired to the app's metrics and to
    ``termination_log`` (tinyimg.termination); either way the app's lifespan starts it (models
    load in the background) and stops it. ``results``: the result store, over ``jobs.resultStore``.
    ``config_source``: the file the config came from, followed while the app runs
    (``tinyimg.api.reloader``)."""
    server_metrics = ServerMetrics([m.name for m in config.models])
    if engine is None:
        engine = build_engine(config, server_metrics, engine_options or {}, termination_log)
    server_metrics.watch_engine(engine.status, engine.model_states)
    durable = build_durable(config, results)
    job_service = build_job_service(config, engine, server_metrics, durable)
    reloader = None
    if config_source is not None:
        def on_config(running: ServerConfig) -> None:
            app.state.config = running

        reloader = ConfigReloader(config_source, config, engine, job_service, on_config)
    worker = None
    if durable.queue is not None:
        from tinyimg.runtime.redisworker import RedisJobWorker

        worker = RedisJobWorker(job_service, durable.queue, config.jobs_config(), config.models, build_consumer_name())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("starting engine", extra={"models": [m.name for m in config.models]})
        await engine.start()
        job_service.start()
        if worker is not None:
            worker.start()
        sweeper = asyncio.get_running_loop().create_task(sweep_results(durable, config.jobs_config().result_ttl_seconds))
        follower = asyncio.get_running_loop().create_task(reloader.run()) if reloader is not None else None
        try:
            yield
        finally:
            log.info("stopping engine")
            sweeper.cancel()
            if follower is not None:
                follower.cancel()
            if worker is not None:  # takes nothing more; what it runs is stored and acknowledged, or handed back
                await worker.stop_taking()
            await engine.stop()
            if worker is not None:
                await worker.stop()
            await job_service.stop()  # and its webhook sender
            if durable.queue is not None:
                await durable.queue.close()

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN; /openapi.json stays.
    server_metrics.watch_durable(durable.results, worker)
    app = FastAPI(title="TinyIMGserver", version=tinyimg.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry=FASTAPI_TELEMETRY)
    app.state.config = config
    app.state.reloader = reloader
    app.state.engine = engine
    app.state.metrics = server_metrics
    app.state.jobs = job_service
    app.state.durable = durable
    app.state.tenants = load_api_keys(config.api_keys_file) if config.api_keys_file else None
    app.state.api_keys = app.state.tenants.key_hashes if app.state.tenants is not None else None
    app.state.auth_failures = build_auth_failure_limiter()
    try:
        app.state.router_secret = read_job_secret(config.router_secret_file, "routerSecretFile") if config.router_secret_file else None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    jobs_config = config.jobs_config()
    app.state.streams = StreamGate(StreamLimits(jobs_config.max_streams_per_job, jobs_config.max_streams_per_client,
                                                jobs_config.max_streams))
    for router in ROUTERS:
        app.include_router(router)
    install_edge(app, build_edge_limits(config), observe=server_metrics.observe_request,
                 extra_headers=build_revision_header(os.environ.get("TINYIMG_REVISION")))
    return app
