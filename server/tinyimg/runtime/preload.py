"""``cache.preload``: a loader fills the model cache once, and model servers wait for it.

``tinyimg preload --config FILE --model NAME`` (the operator's loader Job) downloads a Hub
model's files into HF_HOME (a local directory has nothing to fetch, only its size to report),
then writes a marker beside them: ``$HF_HOME/tinyimg-preload/<model>.json`` with the weights'
revision (``ModelSpec.weight_revision``), their bytes and files. It prints the same JSON and
writes it to the termination log, where the operator reads it for ``status.cache``.

A model server started with ``TINYIMG_PRELOAD_MARKER`` (the markers' directory: the operator sets
it on the pods of a model with ``cache.preload``) waits until its model's marker names its revision
before loading.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinyimg.core import labels
from tinyimg.spec import ModelSpec

log = logging.getLogger("tinyimg.engine")

MARKER_DIR, MARKER_ENV = labels.PRELOAD_MARKERS, labels.PRELOAD_MARKER_ENV
WAIT_LOG_SECONDS = 10.0


def marker_path(cache_dir: Path, model: str) -> Path:
    return cache_dir / MARKER_DIR / f"{model}.json"


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def measure_files(root: Path) -> tuple[int, int]:
    """(bytes, files) under ``root``, following the Hub cache's symlinks to their blobs."""
    total = count = 0
    for path in root.rglob("*"):
        if path.is_file():
            total += path.stat().st_size
            count += 1
    return total, count


def fetch(spec: ModelSpec) -> Path:
    """The model's files on this machine: a Hub model downloaded into HF_HOME (nothing when they are
    there), a local directory as it is."""
    if spec.is_local_source():
        source = Path(spec.source).expanduser()
        if not source.is_dir():
            raise FileNotFoundError(f"model directory {spec.source} does not exist")
        return source
    from tinyimg.families.base import download_pipeline

    return Path(download_pipeline(spec))


def run_preload(spec: ModelSpec, cache_dir: Path, fetcher: Callable[[ModelSpec], Path] = fetch) -> dict[str, Any]:
    """Fetch ``spec``'s files and write its marker (atomically): what the marker says."""
    started = time.monotonic()
    files_dir = fetcher(spec)
    size, count = measure_files(files_dir)
    marker = {"model": spec.name, "revision": spec.weight_revision(), "source": spec.source, "bytes": size,
              "files": count, "seconds": round(time.monotonic() - started, 3)}
    path = marker_path(cache_dir, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(marker))
    partial.replace(path)
    return marker


def wait_for_preload(path: Path, revision: str, timeout: float | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> float:
    """Block until the marker at ``path`` names ``revision``: the seconds waited."""
    started = last_log = time.monotonic()
    while True:
        marker = read_marker(path)
        if marker is not None and marker.get("revision") == revision:
            return time.monotonic() - started
        now = time.monotonic()
        if timeout is not None and now - started > timeout:
            raise TimeoutError(f"the preload marker {path} did not name revision {revision} within {timeout:.0f}s")
        if now - last_log >= WAIT_LOG_SECONDS or now == started:
            log.info("waiting for the cache's preload Job",
                     extra={"marker": str(path), "revision": revision, "found": (marker or {}).get("revision")})
            last_log = now
        sleep(0.5)


def main(argv: Sequence[str]) -> int:
    from tinyimg.core.logs import configure_logging
    from tinyimg.spec import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="tinyimg preload", description="Fill the model cache (HF_HOME) for one model.")
    parser.add_argument("--config", required=True, type=Path, help="the config file naming the model")
    parser.add_argument("--model", required=True, help="the model to fetch")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: HF_HOME (~/.cache/huggingface)")
    parser.add_argument("--termination-log", type=Path, metavar="PATH",
                        help="write the marker's JSON here too, if the file exists (Kubernetes: the terminationMessagePath)")
    args = parser.parse_args(list(argv))
    configure_logging("info")
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"tinyimg preload: {err}", file=sys.stderr)
        return 2
    spec = next((m for m in config.models if m.name == args.model), None)
    if spec is None:
        print(f"tinyimg preload: no model {args.model!r} in {args.config}", file=sys.stderr)
        return 2
    cache_dir = args.cache_dir or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    try:
        marker = run_preload(spec, cache_dir)
    except Exception as err:  # the Job fails with why (its pod's message)
        print(f"tinyimg preload: {spec.name}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    text = json.dumps(marker)
    print(text)
    if args.termination_log is not None and args.termination_log.is_file():
        args.termination_log.write_text(text)
    return 0
