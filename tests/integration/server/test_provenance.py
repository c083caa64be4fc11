"""Provenance through a real `tinyimg serve` (tiny Flux, CPU, 256x256 so the watermark fits): the
answered PNG and JPEG carry the parameters, the AI-generated mark and the watermark; the audit
log line names the job and the image hashes, never the prompt; `tinyimg audit verify --config`
finds the job of an image the server made and refuses a foreign one; a model with provenance off
answers plain images."""

from __future__ import annotations

import base64
import io
import json
import subprocess

import httpx
import pytest
import yaml
from PIL import Image

from tests.support.processes import TINYIMG, spawn, wait_until_ready
from tests.support.signing import write_signing_key
from tests.support.tiny_models import tiny_config, tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.provenance.metadata import is_marked_generated, read_parameters
from tinyimg.provenance.watermark import build_payload, read_payload

PROMPT = "a lighthouse in a private storm"
TEXT = "tests-deployment"


@pytest.fixture(scope="module")
def server(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("provenance")
    config = tiny_config(tiny_model_dirs, ("flux", "sdxl"), defaults={"width": 256, "height": 256, "steps": 2})
    config.models[0].provenance = config.models[0].provenance.model_copy(
        update={"parameters": True, "watermark": True, "watermark_text": TEXT, "c2pa": True})
    cert, key = write_signing_key(tmp / "c2pa")
    config.c2pa_cert_file, config.c2pa_key_file = str(cert), str(key)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_wire()))
    proc = wait_until_ready(spawn("server", ["serve", "--config", str(path)], tmp))
    try:
        yield {"proc": proc, "config": path, "cwd": tmp / "server.cwd", "tmp": tmp}
    finally:
        proc.stop()


def verify(server, image: bytes, name: str) -> tuple[int, dict]:
    path = server["tmp"] / name
    path.write_bytes(image)
    result = subprocess.run([TINYIMG, "audit", "verify", "--config", str(server["config"]), str(path)],
                            capture_output=True, text=True, cwd=server["cwd"], timeout=60)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {"stderr": result.stderr}


def test_a_png_answer_carries_parameters_mark_and_watermark_and_verify_finds_its_job(server):
    answer = httpx.post(f"{server['proc'].url}/generate", json={"model": "tiny-flux", "prompt": PROMPT, "seed": 5},
                        headers={"Accept": "image/png"}, timeout=120)
    assert answer.status_code == 200, answer.text
    image = Image.open(io.BytesIO(answer.content))
    parameters = read_parameters(image.info)
    assert parameters["model"] == "tiny-flux" and parameters["seed"] == 5 and parameters["steps"] == 2
    assert "prompt" not in parameters and PROMPT.encode() not in answer.content
    assert is_marked_generated(image.info) and read_payload(image) == build_payload(TEXT)
    code, report = verify(server, answer.content, "made.png")
    assert code == 0 and report["made_here"] and report["job_id"] == answer.headers["X-Job-ID"]
    assert report["audit_record"]["model"] == "tiny-flux" and report["watermark"]["matches"]
    # signed content credentials: valid, AI-generated, by this model, with this deployment's key
    assert report["c2pa"]["signed_here"] and report["c2pa"]["validation_state"] == "Valid"
    assert report["c2pa"]["software_agent"].startswith("tinyimg tiny-flux@")
    # the audit log line of that job: its image's hash, no prompt
    lines = [json.loads(line) for line in server["proc"].log.read_text().splitlines() if line.startswith("{")]
    [audit] = [line["audit"] for line in lines if line.get("logger") == "tinyimg.audit"
               and line.get("job_id") == answer.headers["X-Job-ID"]]
    assert audit["images"][0]["sha256"] == report["sha256"] and PROMPT not in json.dumps(audit)


def test_the_servers_own_jpeg_carries_its_xmp_and_verify_finds_its_job(server):
    """The watermark's JPEG survival is tested on natural-looking images (tests/unit/server/
    test_provenance.py): the tiny random-weight models paint white noise, which a JPEG at quality 90
    rewrites too much for any invisible mark."""
    answer = httpx.post(f"{server['proc'].url}/generate", json={"model": "tiny-flux", "prompt": PROMPT, "seed": 6,
                                                               "output_format": "jpeg"}, timeout=120)
    assert answer.status_code == 200, answer.text
    data = base64.b64decode(answer.json()["images"][0]["b64"])
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and read_parameters(image.info)["seed"] == 6 and is_marked_generated(image.info)
    code, report = verify(server, data, "made.jpg")
    assert code == 0 and report["job_id"] is not None and report["audit_record"]["images"][0]["seed"] == 6


def test_verify_refuses_a_foreign_image_and_a_model_without_provenance_answers_plain_images(server):
    plain = httpx.post(f"{server['proc'].url}/generate", json={"model": "tiny-sdxl", "prompt": PROMPT, "seed": 5},
                       headers={"Accept": "image/png"}, timeout=120)
    assert plain.status_code == 200
    image = Image.open(io.BytesIO(plain.content))
    assert read_parameters(image.info) is None and not is_marked_generated(image.info)
    assert b"c2pa" not in plain.content  # no manifest either
    assert read_payload(image) != build_payload(TEXT)
    foreign = io.BytesIO()
    Image.new("RGB", (300, 300), "navy").save(foreign, "PNG")
    code, report = verify(server, foreign.getvalue(), "foreign.png")
    assert code == 1 and not report["made_here"] and report["job_id"] is None
    code, report = verify(server, b"not an image at all", "junk.png")
    assert code == 2 and "tinyimg audit verify" in report["stderr"]
