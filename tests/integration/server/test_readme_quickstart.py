"""The README's quick start, run as written: its curl command against a real `tinyimg serve`
process serving the demo config, for each tiny model, writes a real PNG."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
DEMO_URL = "http://127.0.0.1:8000"


def readme_curl_command() -> list[str]:
    """The first curl line of the quick start, split as the shell would."""
    text = (ROOT / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    line = next(line.strip() for line in quick_start.splitlines() if line.strip().startswith("curl "))
    return shlex.split(line)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_server(tiny_model_dirs, tmp_path_factory):
    """`tinyimg serve` on the demo config, its model sources pointed at the session's tiny models."""
    demo = yaml.safe_load((ROOT / "server/demo/config.yaml").read_text())
    for model in demo["models"]:
        model["source"] = str(tiny_model_dirs[model["family"]])
    workdir = tmp_path_factory.mktemp("readme")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(demo))
    port = free_port()
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyimg", "serve", "--config", str(config), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (workdir / "server.log").read_text()
            try:
                if httpx.get(f"{url}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "demo server not ready in 180 s"
            time.sleep(0.2)
        yield url, [m["name"] for m in demo["models"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_readme_curl_targets_the_make_run_defaults():
    command = readme_curl_command()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^HOST\s+\?= 127\.0\.0\.1$", makefile, re.M)
    assert re.search(r"^PORT\s+\?= 8000$", makefile, re.M)
    assert re.search(r"^CONFIG \?= server/demo/config\.yaml$", makefile, re.M)
    assert any(arg.startswith(DEMO_URL + "/generate") for arg in command)
    assert "-o" in command and command[command.index("-o") + 1].endswith(".png")


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-flux"])
def test_readme_curl_writes_a_png_from_each_demo_model(demo_server, tmp_path, model):
    url, models = demo_server
    assert model in models
    command = [arg.replace(DEMO_URL, url) for arg in readme_curl_command()]
    body = command.index("-d") + 1
    command[body] = re.sub(r'"model": "[^"]+"', f'"model": "{model}"', command[body])
    subprocess.run(command, cwd=tmp_path, check=True, timeout=120)
    output = tmp_path / command[command.index("-o") + 1]
    image = Image.open(io.BytesIO(output.read_bytes()))
    assert image.format == "PNG"
    assert image.size == (64, 64)
    # A real image from a random-weight model: not a constant field.
    assert len(image.getcolors(1 << 16)) > 100
