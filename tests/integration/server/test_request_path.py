"""How many product files one ``POST /generate`` crosses on the model server (real uvicorn, real
engine, the tiny SDXL pipeline): every file of ``server/tinyimg`` in which a function runs while
the server answers it. A bound on the request's path, so a change that threads it through more
rooms of the house is seen (it was 25 files before the structure issue; 16 before that; 18 after
it, then 20 with tenants: the fair picker and the tenant it reads are on every request's way; 21
with tracing: core/tracing.py's on/off checks are on the way even when tracing is off; 23 with
provenance: every job leaves an audit record (provenance/audit.py) and its images are finished by
the provenance step (provenance/stamp.py), whether or not the model marks them; 24 with the
out-of-memory policy: every batch runs through runtime/oom.py, which splits it only when it fails)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import FrameType

import httpx

import tinyimg
from tests.integration.server.conftest import wait_ready
from tests.support.tiny_models import tiny_config
from tinyimg.api.app import create_app
from tinyimg.serve import BackgroundServer

PRODUCT = str(Path(tinyimg.__file__).parent) + "/"
MAX_FILES = 24


class FileTrace:
    """Records the product files whose functions are called, while ``on``, in threads started after
    ``install`` (the server's, the device worker's, the encoding thread's)."""

    def __init__(self) -> None:
        self.on, self.files = False, set[str]()

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if self.on and event == "call" and frame.f_code.co_filename.startswith(PRODUCT):
            self.files.add(frame.f_code.co_filename.removeprefix(PRODUCT))


def test_one_generation_crosses_at_most_23_product_files(tiny_model_dirs):
    config = tiny_config(tiny_model_dirs, ("sdxl",))
    body = {"model": config.models[0].name, "prompt": "a red cube", "steps": 2}
    trace = FileTrace()
    threading.setprofile(trace)
    try:
        server = BackgroundServer(create_app(config)).start()
        try:
            wait_ready(server.url)
            assert httpx.post(f"{server.url}/generate", json=body, timeout=60).status_code == 200  # warm
            trace.on = True
            answer = httpx.post(f"{server.url}/generate", json=body, timeout=60)
            trace.on = False
        finally:
            server.stop()
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    assert answer.status_code == 200 and len(answer.json()["images"]) == 1
    assert "api/generate.py" in trace.files and "runtime/worker.py" in trace.files  # the trace saw the path
    assert len(trace.files) <= MAX_FILES, sorted(trace.files)
