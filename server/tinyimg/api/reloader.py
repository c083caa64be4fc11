"""``tinyimg serve`` follows its config file: it reads it again when it changes (checked every
second; a Kubernetes ConfigMap volume swaps its files, which counts as a change) and on SIGHUP, and
applies what needs no new weights (``tinyimg.runtime.reload``) between batches. What only a restart
applies is logged and shown in ``/status`` (``config.restart_needed``); a file that does not parse
is logged and ignored (the running settings stay)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyimg.provenance.support import check_provenance_support
from tinyimg.runtime.jobrunner import JobsApi
from tinyimg.runtime.jobs import EngineApi
from tinyimg.runtime.reload import plan_reload
from tinyimg.spec import ConfigError, ServerConfig

log = logging.getLogger("tinyimg.config")

CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class ConfigSource:
    """Where the running config came from: its file, and how it is read (the command line's
    ``--model``, ``--host`` and ``--port`` applied again)."""

    path: Path
    load: Callable[[], ServerConfig]


def read_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ConfigReloader:
    def __init__(self, source: ConfigSource, running: ServerConfig, engine: EngineApi, jobs: JobsApi,
                 on_config: Callable[[ServerConfig], None], interval: float = CHECK_SECONDS):
        self.source, self.running, self.engine, self.jobs = source, running, engine, jobs
        self.on_config, self.interval = on_config, interval
        self.digest = read_digest(source.path)
        self.generation = 1  # +1 each time live settings are applied
        self.applied_at = time.time()
        self.restart_needed: list[str] = []
        self.error: str | None = None
        self._kick = asyncio.Event()

    def request(self) -> None:
        """Read the file now (SIGHUP), changed or not."""
        self.digest = None
        self._kick.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread: no signals
            loop.add_signal_handler(signal.SIGHUP, self.request)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self.interval)
                self._kick.clear()
                await self.check()
        finally:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGHUP)

    async def check(self) -> bool:
        """Apply the file if it changed; True when live settings were applied."""
        digest = read_digest(self.source.path)
        if digest is None or digest == self.digest:
            return False
        self.digest = digest
        try:
            edited = self.source.load()
            check_provenance_support(edited, signing_loaded=self.jobs.signing is not None)
        except ConfigError as err:
            self.error = str(err)
            log.error("config file changed but is not valid; the running settings stay", extra={"error": str(err)})
            return False
        except Exception as err:  # a bug in reading must not stop the following: the next change is read again
            self.error = f"{type(err).__name__}: {err}"
            log.exception("config file changed but could not be read; the running settings stay")
            return False
        self.error = None
        plan = plan_reload(self.running, edited)
        for spec in plan.live:
            await self.engine.apply_model_spec(spec)  # adapters loaded first: then requests may name them
            self.jobs.apply_model_spec(spec)
        if plan.jobs is not None:
            self.jobs.apply_jobs_config(plan.jobs)
        applied = {spec.name: spec for spec in plan.live}
        update: dict[str, Any] = {"models": [applied.get(m.name, m) for m in self.running.models]}
        if plan.jobs is not None:
            update["jobs"] = plan.jobs
        self.running = self.running.model_copy(update=update)
        self.restart_needed = plan.restart
        if plan.live or plan.jobs is not None:
            self.generation += 1
            self.applied_at = time.time()
            self.on_config(self.running)
            log.info("config reloaded", extra={"generation": self.generation, "models": sorted(applied)})
        if plan.restart:
            log.warning("config changes that apply only after a restart", extra={"changes": plan.restart})
        return bool(plan.live) or plan.jobs is not None

    def describe(self) -> dict[str, Any]:
        return {"generation": self.generation, "applied_at": self.applied_at, "restart_needed": self.restart_needed,
                "error": self.error}
