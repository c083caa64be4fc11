"""`tinyimg serve` as a real process: it serves a PNG and logs JSON lines with the request id."""

from __future__ import annotations

import io
import json

import httpx
import yaml
from PIL import Image

from tests.support.processes import spawn, wait_until_ready
from tests.support.tiny_models import tiny_model_entry


def test_tinyimg_serve_serves_a_png_and_logs_the_request_id(tiny_model_dirs, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": [tiny_model_entry(f, d) for f, d in tiny_model_dirs.items()]}))
    proc = wait_until_ready(spawn("server", ["serve", "--config", str(config), "--model", "tiny-flux"], tmp_path))
    try:
        models = [m["name"] for m in httpx.get(f"{proc.url}/models").json()["models"]]
        assert models == ["tiny-flux"]
        r = httpx.post(
            f"{proc.url}/generate",
            json={"model": "tiny-flux", "prompt": "a harbour", "seed": 5},
            headers={"Accept": "image/png", "X-Request-ID": "cli-serve-1"},
            timeout=60,
        )
        assert r.status_code == 200 and r.headers["x-seed"] == "5"
        assert Image.open(io.BytesIO(r.content)).size == (64, 64)
    finally:
        proc.stop()
    lines = [json.loads(line) for line in proc.log.read_text().splitlines() if line.startswith("{")]
    access = [e for e in lines if e["request_id"] == "cli-serve-1" and e["logger"] == "tinyimg.access"]
    assert access and access[0]["status"] == 200 and access[0]["path"] == "/generate"
    assert any(e["message"] == "model ready" and e.get("model") == "tiny-flux" for e in lines)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so check that the shutdown ran.
    assert any(e["message"] == "stopping engine" for e in lines)
