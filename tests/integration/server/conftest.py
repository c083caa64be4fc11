"""Real uvicorn on loopback serving the real tiny SDXL and Flux pipelines (from tests.support)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.harness import wait_http
from tests.support.faults import PacedFluxHandler, gated  # noqa: F401  (a fixture)
from tests.support.jobs_client import build_jobs_config
from tests.support.tiny_models import tiny_config, tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.api.app import create_app
from tinyimg.core.logs import JsonFormatter, RequestIdFilter
from tinyimg.serve import BackgroundServer


@dataclass
class Live:
    url: str
    server: BackgroundServer


def wait_ready(url: str, timeout: float = 120.0) -> None:
    wait_http(f"{url}/health/ready", timeout)


def start_live(config, ready: bool = True, **engine_options) -> Live:
    server = BackgroundServer(create_app(config, engine_options=engine_options)).start()
    if ready:
        wait_ready(server.url)
    return Live(server.url, server)


@pytest.fixture(scope="session")
def live(tiny_model_dirs) -> Iterator[Live]:
    """Both tiny models, batching on (max 4 images, 20 ms wait), shared by the HTTP tests."""
    served = start_live(tiny_config(tiny_model_dirs))
    yield served
    served.server.stop()


@pytest.fixture(scope="session")
def jobs_live(tiny_model_dirs, tmp_path_factory) -> Iterator[str]:
    """Tiny Flux with its steps paced to 50 ms, API keys, webhooks to loopback: the jobs tests."""
    config = build_jobs_config(tiny_model_dirs, tmp_path_factory.mktemp("jobs"))
    served = start_live(config, handler_factory=PacedFluxHandler)
    yield served.url
    served.server.stop()


class JsonLines(logging.Handler):
    """Keeps the JSON lines the server would print, to check what they carry."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def server_log() -> Iterator[JsonLines]:
    handler = JsonLines()
    logger = logging.getLogger("tinyimg")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)
