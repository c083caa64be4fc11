"""Content checks through a real `tinyimg serve`: a tiny random-weight classifier built offline
(`tinyimg make-tiny-classifier`, as the tiny models are) scores every image of tiny Flux on the
device thread; its scores spread, so among a few seeds some images are flagged and some are not.
Three model entries share the weights and differ in policy: `flag` answers every image with its
content flag, `blur` answers a flagged image visibly blurred and its batch mate untouched, `block`
refuses a request with a flagged image (422 content_blocked) and keeps no bytes of it. A prompt
with a denied phrase is refused before it is queued."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.support.processes import TINYIMG, spawn, wait_until_ready
from tests.support.tiny_models import tiny_model_dirs, tiny_model_entry  # noqa: F401  (the fixture)

SEEDS = range(1, 13)


@pytest.fixture(scope="module")
def server(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("content")
    classifier = tmp / "classifier"
    subprocess.run([TINYIMG, "make-tiny-classifier", "--out", str(classifier)], check=True, capture_output=True, timeout=120)
    models = []
    for policy in ("flag", "blur", "block"):
        entry = tiny_model_entry("flux", tiny_model_dirs["flux"])
        entry.update({"name": f"flux-{policy}", "safety": {"checker": "classifier", "source": str(classifier),
                                                           "policy": policy, "threshold": 0.5,
                                                           "denyPrompts": ["forbidden fruit", "xyzzy"]}})
        models.append(entry)
    (tmp / "config.yaml").write_text(yaml.safe_dump({"models": models}))
    proc = wait_until_ready(spawn("server", ["serve", "--config", str(tmp / "config.yaml")], tmp))
    try:
        yield {"url": proc.url, "proc": proc, "results": tmp / "server.cwd" / ".tinyimg" / "results"}
    finally:
        proc.stop()


def generate(server, model: str, seed: int, n: int = 1, prompt: str = "a kite") -> httpx.Response:
    return httpx.post(f"{server['url']}/generate", json={"model": f"flux-{model}", "prompt": prompt, "seed": seed, "num_images": n},
                      timeout=120)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))), dtype=int)


@pytest.fixture(scope="module")
def scan(server):
    """Seed -> (flagged, score) under the flag policy."""
    found = {}
    for seed in SEEDS:
        answer = generate(server, "flag", seed)
        assert answer.status_code == 200, answer.text
        [flag] = answer.json()["content_flags"]
        found[seed] = (flag["flagged"], flag["score"])
    return found


def test_flag_answers_every_image_with_its_score_and_the_scores_tell_images_apart(scan):
    flagged = [s for s, (f, _) in scan.items() if f]
    clean = [s for s, (f, _) in scan.items() if not f]
    assert flagged and clean, scan
    assert all((score >= 0.5) == f for f, score in scan.values())
    assert len({score for _, score in scan.values()}) > len(scan) // 2  # real scores, not a constant


def test_blur_changes_the_flagged_image_and_leaves_its_batch_mate_alone(server, scan):
    # a seed whose image is flagged next to one (seed + 1, the same request's second image) that is not
    pairs = [(s, s + 1) for s in SEEDS if s + 1 in scan and scan[s][0] != scan[s + 1][0]]
    assert pairs, scan
    first, _ = pairs[0]
    flagged_index = 0 if scan[first][0] else 1
    plain, blurred = generate(server, "flag", first, n=2).json(), generate(server, "blur", first, n=2).json()
    assert [f["flagged"] for f in blurred["content_flags"]] == [f["flagged"] for f in plain["content_flags"]]
    changed = np.abs(pixels(blurred["images"][flagged_index]["b64"]) - pixels(plain["images"][flagged_index]["b64"]))
    assert changed.mean() > 20  # visibly changed: white noise blurred to its mean
    other = 1 - flagged_index
    assert blurred["images"][other]["b64"] == plain["images"][other]["b64"]  # untouched, byte for byte


def test_block_refuses_a_flagged_image_keeps_nothing_and_serves_a_clean_one(server, scan):
    flagged = next(s for s, (f, _) in scan.items() if f)
    clean = next(s for s, (f, _) in scan.items() if not f)
    refused = generate(server, "block", flagged)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "content_blocked"
    assert generate(server, "block", clean).status_code == 200
    # a job under block: failed with content_blocked, and no image of it anywhere in the result store
    created = httpx.post(f"{server['url']}/v1/jobs", json={"model": "flux-block", "prompt": "a kite", "seed": flagged},
                         timeout=30).json()
    for _ in range(600):
        job = httpx.get(f"{server['url']}/v1/jobs/{created['id']}", timeout=10).json()
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    assert job["status"] == "failed" and job["error"]["code"] == "content_blocked" and job["images"] is None
    stored = list((server["results"] / "jobs" / created["id"]).glob("*")) if (server["results"] / "jobs").is_dir() else []
    assert not [p for p in stored if p.suffix in (".png", ".jpeg", ".webp")]
    audits = [json.loads(line)["audit"] for line in server["proc"].log.read_text().splitlines()
              if line.startswith("{") and json.loads(line).get("job_id") == created["id"] and "audit" in json.loads(line)]
    assert audits and audits[-1]["error"] == "content_blocked" and audits[-1]["images"] == []
    assert audits[-1]["content_flags"][0]["flagged"] is True


def test_a_denied_phrase_is_refused_before_queueing_and_a_mere_substring_is_not(server):
    refused = generate(server, "flag", 1, prompt="a Forbidden Fruit on a table")
    error = refused.json()["error"]
    assert refused.status_code == 422 and (error["code"], error["field"]) == ("content_blocked", "prompt")
    assert generate(server, "flag", 1, prompt="xyzzyx is not a denied word").status_code == 200
