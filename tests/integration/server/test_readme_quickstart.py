"""The README's quick start, run as written: its curl command against a real `tinyimg serve`
process serving the demo config, for each tiny model, writes a real PNG."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.support.processes import spawn, wait_until_ready

ROOT = Path(__file__).resolve().parents[3]
DEMO_URL = "http://127.0.0.1:8000"


def readme_curl_command() -> list[str]:
    """The first curl line of the quick start, split as the shell would."""
    text = (ROOT / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    line = next(line.strip() for line in quick_start.splitlines() if line.strip().startswith("curl "))
    return shlex.split(line)


@pytest.fixture(scope="module")
def demo_server(tiny_model_dirs, tmp_path_factory):
    """`tinyimg serve` on the demo config, its model sources pointed at the session's tiny models."""
    demo = yaml.safe_load((ROOT / "server/demo/config.yaml").read_text())
    for model in demo["models"]:
        model["source"] = str(tiny_model_dirs[model["family"]])
    workdir = tmp_path_factory.mktemp("readme")
    (workdir / "config.yaml").write_text(yaml.safe_dump(demo))
    proc = wait_until_ready(spawn("demo", ["serve", "--config", str(workdir / "config.yaml")], workdir), timeout=180)
    try:
        yield proc.url, [m["name"] for m in demo["models"]]
    finally:
        proc.stop()


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
