"""Adapter files for the tests: tiny LoRAs built by ``tinyimg make-tiny-lora``, and a file server on
loopback (a real uvicorn serving Starlette's StaticFiles) that counts the GETs of each file: the
stand-in for the HTTPS host a production adapter URL names."""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from tinyimg.cli import main as tinyimg
from tinyimg.serve import BackgroundServer

LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoraFile:
    path: Path
    sha256: str

    @property
    def directory(self) -> Path:
        return self.path.parent


def make_lora(out: Path, family: str = "flux", seed: int | None = None) -> LoraFile:
    """A tiny random LoRA of ``family`` (another seed: another adapter)."""
    assert tinyimg(["make-tiny-lora", "--family", family, "--out", str(out),
                    *(["--seed", str(seed)] if seed is not None else [])]) == 0
    path = out / LORA_FILE
    return LoraFile(path, hashlib.sha256(path.read_bytes()).hexdigest())


class CountingFiles:
    """StaticFiles that counts each path's GETs (what a cache must spare the origin)."""

    def __init__(self, root: Path):
        self.files = StaticFiles(directory=root)
        self.gets: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            self.gets["/" + scope["path"].removeprefix(scope.get("root_path", "")).lstrip("/")] += 1
        await self.files(scope, receive, send)


@contextlib.contextmanager
def serving_files(root: Path) -> Iterator[tuple[CountingFiles, str]]:
    """``root`` over HTTP on loopback: (the counter, the base URL)."""
    files = CountingFiles(root)
    server = BackgroundServer(Starlette(routes=[Mount("/", app=files)])).start()
    try:
        yield files, server.url
    finally:
        server.stop()
