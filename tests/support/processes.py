"""Real processes on loopback: `tinyimg serve` with the tiny models, and `tinyimg router` in front.

Servers start once per module (in parallel: each takes a few seconds to load torch and the tiny
pipelines); routers are cheap and start per test with the flags the test is about.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.harness import free_port, wait_http
from tests.support.tiny_models import tiny_config
from tinyimg.spec import JobsConfig

TINYIMG = str(Path(sys.executable).with_name("tinyimg"))


@dataclass
class Proc:
    name: str
    url: str
    popen: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL: the process dies mid-request, as a crashed or evicted pod would."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def spawn(name: str, args: list[str], log_dir: Path, port: int | None = None, env: dict[str, str] | None = None) -> Proc:
    """``port``: where to listen (a process restarted in place); default a free one. ``env``: added
    to this process's environment (OTEL_* for a traced process)."""
    port = port or free_port()
    log = log_dir / f"{name}.log"
    # One torch thread per server: several servers share 2 cores here, and oversubscribed
    # threads make every request slow and the timings noisy.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    # Each process in a working directory of its own, as each pod has its own disk: `tinyimg
    # serve` keeps results under it (.tinyimg/results) unless its config names a store.
    workdir = log_dir / f"{name}.cwd"
    workdir.mkdir(exist_ok=True)
    popen = subprocess.Popen(
        [TINYIMG, *args, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
    )
    return Proc(name, f"http://127.0.0.1:{port}", popen, log)


def wait_until_ready(proc: Proc, path: str = "/health/ready", timeout: float = 120.0) -> Proc:
    wait_http(proc.url + path, timeout, proc.popen, proc.log)
    return proc


def write_server_config(path: Path, dirs: dict[str, Path], families: tuple[str, ...], jobs: dict | None = None,
                        **overrides) -> Path:
    """``overrides`` go to every model (tiny_config); ``jobs`` is the server's ``jobs:`` block (wire names)."""
    config = tiny_config(dirs, families, **overrides)
    if jobs is not None:
        config.jobs = JobsConfig.model_validate(jobs)
    path.write_text(yaml.safe_dump(config.to_wire()))
    return path


def start_servers(specs: dict[str, tuple[tuple[str, ...], dict]], dirs: dict[str, Path], tmp: Path) -> dict[str, Proc]:
    """name -> (families, model overrides); all spawned first, then awaited (they load in parallel)."""
    procs = {}
    for name, (families, overrides) in specs.items():
        config = write_server_config(tmp / f"{name}.yaml", dirs, families, **overrides)
        procs[name] = spawn(name, ["serve", "--config", str(config)], tmp)
    try:
        for proc in procs.values():
            wait_until_ready(proc)
    except Exception:
        for proc in procs.values():
            proc.kill()
        raise
    return procs


@contextlib.contextmanager
def running_router(args: list[str], tmp: Path, name: str = "router", env: dict[str, str] | None = None) -> Iterator[Proc]:
    proc = wait_until_ready(spawn(name, ["router", *args, "--poll-interval", "0.2"], tmp, env=env), timeout=30)
    try:
        yield proc
    finally:
        proc.stop()
