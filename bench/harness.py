"""Benchmark plumbing: tiny model directories, a served app on loopback, timing, the table.

``free_port`` and ``wait_http`` are the tests' too (tests/support/processes.py imports them): the
benchmarks never import ``tests``."""

from __future__ import annotations

import json
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "bench" / "out"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_tiny_model(family: str) -> Path:
    """The demo's tiny pipeline (what `make demo-models` builds), built here if missing."""
    path = REPO_ROOT / ".demo" / f"tiny-{family}"
    if not (path / "model_index.json").is_file():
        from tinyimg.make_tiny import run_make_tiny_model

        progress(f"building tiny {family} pipeline in {path}")
        run_make_tiny_model(family, path)
    return path


def build_config(name: str, family: str, source: Path, max_batch: int, wait_ms: int, queue: int = 64) -> dict:
    """A one-model config (wire form) for ``tinyimg serve``."""
    model = {
        "name": name,
        "family": family,
        "source": str(source),
        "dtype": "float32",
        "defaults": {"steps": 4, "width": 64, "height": 64},
        "limits": {"maxWidth": 256, "maxHeight": 256, "maxSteps": 20, "maxImages": 8},
        "runtime": {"device": "cpu", "cpuFallback": True, "maxBatchSize": max_batch, "maxBatchWaitMs": wait_ms,
                    "queueSize": queue},
        "resources": {"gpus": 0},
    }
    return {"models": [model]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_tail(log: Path | None, size: int = 3000) -> str:
    return log.read_text(errors="replace")[-size:] if log is not None and log.is_file() else ""


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Until ``url`` answers 200 (polled every 50 ms); fails early when ``process`` (the one serving
    it) exits. Both failures carry the tail of its ``log``. Shared by the benchmarks and the tests."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; {log}:\n{read_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not answering 200 after {timeout}s; {log}:\n{read_tail(log)}")


class ServerProcess:
    """``tinyimg serve`` in its own process, as users run it: the clients in this process then do
    not compete with the server for this interpreter's GIL."""

    def __init__(self, config: dict, label: str):
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        self.config_path = OUT_DIR / f"config-{label}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = OUT_DIR / f"server-{label}.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "tinyimg", "serve", "--config", str(self.config_path), "--port", str(port),
                   "--log-level", "warning"]
        self.process = subprocess.Popen(command, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300.0) -> ServerProcess:
        wait_http(f"{self.url}/health/ready", timeout, self.process, self.log_path)
        return self

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def start_server(config: dict, label: str) -> ServerProcess:
    return ServerProcess(config, label).wait_ready()


def time_call(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def describe_machine() -> dict[str, Any]:
    import os

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def write_results(results: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = OUT_DIR / f"cpu-{stamp}.json"
    text = json.dumps(results, indent=2)
    path.write_text(text)
    (OUT_DIR / "cpu-latest.json").write_text(text)
    return path


def build_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
