"""``tinyimg serve``: read the config, keep the chosen models, run uvicorn with the app."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tinyimg.spec import ConfigError, ServerConfig, load_config

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

    from tinyimg.api.reloader import ConfigSource
    from tinyimg.durable.results import ResultStore
    from tinyimg.http.limits import EdgeLimits
    from tinyimg.runtime.engine import Engine


def select_models(config: ServerConfig, names: Sequence[str] | None, where: str) -> ServerConfig:
    """Keep only ``names`` (in config order); an unknown name is a config error naming it."""
    if not names:
        return config
    known = [m.name for m in config.models]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{where}: --model {', '.join(unknown)}: not in the config; it has {', '.join(known)}")
    return config.model_copy(update={"models": [m for m in config.models if m.name in names]})


def load_serve_config(
    path: Path, models: Sequence[str] | None, host: str | None, port: int | None
) -> ServerConfig:
    config = select_models(load_config(path), models, str(path))
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    return config.model_copy(update=overrides)


DEFAULT_RESULT_DIR = ".tinyimg/results"


def build_default_results(config: ServerConfig) -> ResultStore | None:
    """Without ``jobs.resultStore``, ``tinyimg serve`` keeps results in ``.tinyimg/results`` under
    the working directory, so a restart keeps finished jobs and their URLs (None: the config names
    one, or the directory cannot be made, as in a container whose root filesystem is read-only)."""
    from tinyimg.durable.results import DirResultStore

    if config.jobs_config().result_store is not None:
        return None
    try:
        return DirResultStore(Path.cwd() / DEFAULT_RESULT_DIR)
    except ValueError as err:  # a read-only working directory (a container): results stay in memory
        logging.getLogger("tinyimg.jobs").warning("no result directory: %s; set jobs.resultStore", err)
        return None


def run_server(config: ServerConfig, log_level: str = "info", termination_log: Path | None = None,
               config_source: ConfigSource | None = None) -> None:
    """``config_source``: the file ``config`` was read from, followed while serving."""
    import uvicorn

    from tinyimg.api.app import build_edge_limits, create_app
    from tinyimg.core.drain import EXIT_SLACK_SECONDS
    from tinyimg.http.server import build_server_options

    app = create_app(config, termination_log=termination_log, results=build_default_results(config),
                     config_source=config_source)
    uvicorn_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        # uvicorn's wait for open connections starts only after the engine drained (SIGTERM).
        timeout_graceful_shutdown=EXIT_SLACK_SECONDS,
        **build_server_options(build_edge_limits(config), config.trusted_proxies or ()),
    )
    serve_with_drain(uvicorn_config, app.state.engine)


def serve_with_drain(uvicorn_config: uvicorn.Config, engine: Engine) -> None:
    """Serve until a signal; SIGTERM drains the engine first, any other signal stops it (tinyimg.shutdown)."""
    from tinyimg.shutdown import DrainingServer

    DrainingServer(uvicorn_config, engine).run()


class BackgroundServer:
    """uvicorn serving ``app`` from a thread of this process, on a port the OS picks: for tests,
    benchmarks and embedding. ``with BackgroundServer(app) as server: httpx.get(server.url + ...)``."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, limits: EdgeLimits | None = None):
        """``limits`` (an ``EdgeLimits``): the edge's protocol and bounds, as ``tinyimg serve`` runs."""
        import socket

        import uvicorn

        from tinyimg.http.limits import EdgeLimits
        from tinyimg.http.server import build_server_options

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.url = "http://{}:{}".format(*self.socket.getsockname())
        options = build_server_options(limits or EdgeLimits())
        config = uvicorn.Config(app, timeout_graceful_shutdown=5, **options)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
