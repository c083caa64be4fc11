"""Capability URLs attacked over real HTTP: traversal in every encoding, the directory's own
secret, odd bytes, huge keys and queries, replayed signatures. Each is a 4xx in the error shape
(403 `url_invalid`, or 404 for a well-signed key with nothing behind it), never a 500 and never a
byte of a file that is not a job image."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.server.conftest import wait_ready
from tests.support.jobs_client import build_jobs_config
from tinyimg.api.app import create_app
from tinyimg.durable.results import build_file_url, image_key
from tinyimg.serve import BackgroundServer

JOB = "job_" + "c" * 32


@pytest.fixture(scope="module")
def served(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    config = build_jobs_config(tiny_model_dirs, tmp, resultStore={"dir": str(tmp / "results")})
    with BackgroundServer(create_app(config)) as server:
        wait_ready(server.url)
        secret = (tmp / "results" / ".url-secret").read_bytes()
        yield server.url, secret


@pytest.mark.parametrize("path", [
    "/v1/files/.url-secret", "/v1/files/jobs/..%2F.url-secret", "/v1/files/jobs%2F..%2F.url-secret",
    "/v1/files/%2e%2e/%2e%2e/etc/passwd", f"/v1/files/jobs/{JOB}/../../.url-secret", f"/v1/files/jobs/{JOB}/job.json",
    f"/v1/files/jobs/{JOB}/0.png.meta", "/v1/files/%FF%FE", "/v1/files/" + "a" * 6000, f"/v1/files/jobs/{JOB}/0.png%00.png",
])
def test_no_path_reaches_anything_but_a_job_image(served, path):
    url, secret = served
    r = httpx.get(url + path + "?expires=99999999999&sig=abc", timeout=10)
    assert r.status_code in (400, 403, 404, 414, 431), (path, r.status_code)
    assert secret not in r.content
    if r.status_code in (403, 404):
        assert r.json()["error"]["code"] in ("url_invalid", "not_found", "job_expired")


def test_a_signature_is_for_its_own_key_and_a_real_one_with_nothing_behind_it_is_404(served):
    url, secret = served
    signed = build_file_url(secret, image_key(JOB, 0, "png"), url, 60, now=time.time())
    r = httpx.get(signed)
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_expired"
    other = signed.replace(f"{JOB}/0.png", f"{JOB}/1.png")
    assert httpx.get(other).json()["error"]["code"] == "url_invalid"
    for query in ("expires=1&expires=2&sig=x", "&".join(f"k{i}=v" for i in range(200)), "sig=" + "x" * 5000):
        r = httpx.get(signed.split("?")[0] + "?" + query)
        assert r.status_code == 403 and r.json()["error"]["code"] == "url_invalid", query
