"""The model server's app factory: routes, error shape, middleware, metrics, engine lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

import tinyimg
from tinyimg import ui
from tinyimg.api import edits, generate, health, info, jobs, metrics, openai_images
from tinyimg.api.deps import load_api_keys
from tinyimg.api.metrics import ServerMetrics
from tinyimg.core.auth import build_auth_failure_limiter
from tinyimg.core.jobs import read_job_secret
from tinyimg.http.edge import install_edge
from tinyimg.http.limits import EdgeLimits
from tinyimg.http.streams import StreamGate, StreamLimits
from tinyimg.runtime.jobrunner import JobService
from tinyimg.runtime.jobs import EngineApi
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.jobviews import build_webhook_payload
from tinyimg.runtime.webhooks import WebhookSender
from tinyimg.spec import ConfigError, ServerConfig
from tinyimg.termination import TerminationLog

log = logging.getLogger("tinyimg.api")

ROUTERS = (
    generate.router, jobs.router, openai_images.router, edits.router, info.router, health.router, metrics.router,
    ui.router,
)


def build_engine(config: ServerConfig, server_metrics: ServerMetrics, options: Mapping[str, Any],
                 termination_log: Path | None = None) -> EngineApi:
    from tinyimg.runtime.engine import Engine

    termination = TerminationLog(termination_log)

    def on_state(model: str, state: str, reason: str | None) -> None:
        log.info("model %s is %s", model, state, extra={"model": model, "state": state})
        termination.record(model, state, reason)

    return Engine(config, on_batch=server_metrics.observe_batch, on_state=on_state, **options)


def build_job_service(config: ServerConfig, engine: EngineApi, server_metrics: ServerMetrics) -> JobService:
    """The jobs service with its metrics and webhook sender wired in."""
    jobs_config = config.jobs_config()
    webhooks = WebhookSender(jobs_config, on_outcome=server_metrics.count_webhook)

    def deliver(record: JobRecord) -> None:
        payload = build_webhook_payload(record)
        if record.webhook is not None:  # msg_<this server's id>: stable over retries, no '.' in it
            webhooks.schedule(record.webhook, f"msg_{record.id}", payload)

    service = JobService(engine, jobs_config, models=config.models, on_finish=server_metrics.observe_job,
                         deliver_webhook=deliver, webhooks=webhooks)
    server_metrics.watch_jobs(service.store)
    return service


def build_edge_limits(config: ServerConfig) -> EdgeLimits:
    defaults = EdgeLimits()
    return EdgeLimits(
        max_body_bytes=config.max_body_bytes, max_body_bytes_total=config.max_body_bytes_total,
        max_connections=config.max_connections or defaults.max_connections
    )


def create_app(
    config: ServerConfig, engine: EngineApi | None = None, *, engine_options: Mapping[str, Any] | None = None,
    termination_log: Path | None = None,
) -> FastAPI:
    """An app serving ``config``'s models. Without ``engine`` it builds one (``engine_options`` go
    to its constructor, e.g. ``devices`` or ``handler_factory``) wired to the app's metrics and to
    ``termination_log`` (tinyimg.termination); either way the app's lifespan starts it (models
    load in the background) and stops it."""
    server_metrics = ServerMetrics([m.name for m in config.models])
    if engine is None:
        engine = build_engine(config, server_metrics, engine_options or {}, termination_log)
    server_metrics.watch_engine(engine.status, engine.model_states)
    job_service = build_job_service(config, engine, server_metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("starting engine", extra={"models": [m.name for m in config.models]})
        await engine.start()
        job_service.start()
        try:
            yield
        finally:
            log.info("stopping engine")
            await engine.stop()
            await job_service.stop()  # and its webhook sender

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN; /openapi.json stays.
    app = FastAPI(title="TinyIMGserver", version=tinyimg.__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config = config
    app.state.engine = engine
    app.state.metrics = server_metrics
    app.state.jobs = job_service
    app.state.api_keys = load_api_keys(config.api_keys_file) if config.api_keys_file else None
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
    install_edge(app, build_edge_limits(config), observe=server_metrics.observe_request)
    return app
