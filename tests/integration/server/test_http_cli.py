"""`tinyimg serve` as a real process: it serves a PNG and logs JSON lines with the request id."""

from __future__ import annotations

import io
import json
import time

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


def test_a_model_that_cannot_load_is_written_to_the_termination_log(tiny_model_dirs, tmp_path):
    """`--termination-log`: the file a kubelet mounts at terminationMessagePath gets the reason (the
    server stays up for the other models); a path that does not exist is left alone."""
    config = tmp_path / "config.yaml"
    broken = {**tiny_model_entry("flux", tiny_model_dirs["flux"]), "name": "broken", "source": str(tmp_path / "no-such-model")}
    config.write_text(yaml.safe_dump({"models": [tiny_model_entry("sdxl", tiny_model_dirs["sdxl"]), broken]}))
    message = tmp_path / "termination-log"
    message.write_text("")  # the kubelet creates it, empty
    proc = wait_until_ready(spawn("terminating", ["serve", "--config", str(config), "--termination-log", str(message)], tmp_path),
                            path="/health")
    try:
        deadline = time.monotonic() + 60
        while not message.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = message.read_text()
        assert text.startswith("model broken failed: ") and "no-such-model" in text, text
        assert "tiny-sdxl" not in text
        states = {m["name"]: m["state"] for m in httpx.get(f"{proc.url}/models").json()["models"]}
        assert states["broken"] == "failed"
    finally:
        proc.stop()
