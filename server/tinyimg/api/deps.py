"""Named dependencies, so route signatures read as what they use."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Request

from tinyimg.api.metrics import ServerMetrics
from tinyimg.spec import ServerConfig


def get_config(request: Request) -> ServerConfig:
    return cast(ServerConfig, request.app.state.config)


def get_engine(request: Request) -> Any:
    return request.app.state.engine


def get_metrics(request: Request) -> ServerMetrics:
    return cast(ServerMetrics, request.app.state.metrics)


def get_jobs(request: Request) -> Any:
    return request.app.state.jobs


ConfigDep = Annotated[ServerConfig, Depends(get_config)]
# Typed loosely: naming the Engine class here would import the runtime (and torch) with the routes.
EngineDep = Annotated[Any, Depends(get_engine)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]
# The jobs service (tinyimg.runtime.jobrunner.JobService); typed loosely for the same reason.
JobsDep = Annotated[Any, Depends(get_jobs)]
