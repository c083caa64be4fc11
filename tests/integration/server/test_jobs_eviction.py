"""The result store's bounds over real HTTP (uvicorn on loopback, the real tiny Flux pipeline):
a finished job is readable until ``jobs.resultTtlSeconds`` has passed, then it and its image
answer 404 ``job_expired`` (and /metrics no longer counts it); past ``jobs.maxResultBytes`` the
oldest finished job goes first. The store's rules in isolation: tests/unit/server/test_jobstore.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.faults import PacedFluxHandler
from tests.support.jobs_client import auth, build_jobs_config, create, wait_for
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

from .conftest import start_live

TTL = 3.0  # short: the test sleeps past it; long enough to read the job once on a busy machine
# Room for two results of this test's job (a 64x64 PNG, ~11.7 KB, plus the store's per-job
# overhead: ~14.4 KB in all) and not three; checked against the server's own figure below.
MAX_RESULT_BYTES = 36_000


def serve(dirs, tmp, **jobs) -> Iterator[str]:
    served = start_live(build_jobs_config(dirs, tmp, **jobs), handler_factory=PacedFluxHandler)
    yield served.url
    served.server.stop()


@pytest.fixture(scope="module")
def short_ttl(tiny_model_dirs, tmp_path_factory) -> Iterator[str]:
    yield from serve(tiny_model_dirs, tmp_path_factory.mktemp("ttl"), resultTtlSeconds=TTL)


@pytest.fixture(scope="module")
def small_store(tiny_model_dirs, tmp_path_factory) -> Iterator[str]:
    yield from serve(tiny_model_dirs, tmp_path_factory.mktemp("bytes"), maxResultBytes=MAX_RESULT_BYTES)


def gauges(url: str) -> dict[tuple[str, str], float]:
    """(metric, state label) -> value of the job store's gauges."""
    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            if s.name in ("tinyimg_jobs", "tinyimg_job_result_bytes"):
                out[(s.name, s.labels.get("state", ""))] = s.value
    return out


def job_answers(url: str, job_id: str) -> dict[str, tuple[int, str | None]]:
    """Status and error code of every way to read a job."""
    out = {}
    for name, method, tail in (("job", "GET", ""), ("image", "GET", "/images/0"), ("events", "GET", "/events"),
                               ("cancel", "DELETE", "")):
        r = httpx.request(method, f"{url}/v1/jobs/{job_id}{tail}", headers=auth(), timeout=10)
        code = r.json()["error"]["code"] if r.status_code >= 400 else None
        out[name] = (r.status_code, code)
    return out


def test_a_finished_job_is_readable_until_its_ttl_then_it_and_its_image_are_404_job_expired(short_ttl):
    job = create(short_ttl, steps=2, seed=11).json()
    done = wait_for(short_ttl, job["id"], lambda j: j["status"] == "succeeded")
    image = httpx.get(done["images"][0]["url"], headers=auth(), timeout=10)
    assert image.status_code == 200 and image.headers["x-seed"] == "11"
    assert time.time() - done["finished_at"] < TTL, "read too late to prove it was still there (machine too busy)"
    assert gauges(short_ttl)[("tinyimg_jobs", "succeeded")] == 1

    time.sleep(max(0.0, done["finished_at"] + TTL + 0.2 - time.time()))
    # Nothing has asked for the job since: a scrape alone must not count what has expired.
    after = gauges(short_ttl)
    assert after[("tinyimg_jobs", "succeeded")] == 0 and after[("tinyimg_job_result_bytes", "")] == 0
    assert job_answers(short_ttl, job["id"]) == {
        "job": (404, "job_expired"), "image": (404, "job_expired"), "events": (404, "job_expired"),
        "cancel": (404, "job_expired"),
    }


def test_past_the_byte_bound_the_oldest_finished_job_is_dropped_first(small_store):
    ids = []
    for seed in (21, 22, 23):
        ids.append(create(small_store, steps=2, seed=seed).json()["id"])
        wait_for(small_store, ids[-1], lambda j: j["status"] == "succeeded")
        if len(ids) == 1:  # the premise: two such results fit the bound, three do not
            one = gauges(small_store)[("tinyimg_job_result_bytes", "")]
            assert 2 * one <= MAX_RESULT_BYTES < 3 * one, one
    assert job_answers(small_store, ids[0])["job"] == (404, "job_expired")
    assert job_answers(small_store, ids[0])["image"] == (404, "job_expired")
    for job_id in ids[1:]:
        assert httpx.get(f"{small_store}/v1/jobs/{job_id}/images/0", headers=auth(), timeout=10).status_code == 200
    assert gauges(small_store)[("tinyimg_jobs", "succeeded")] == 2
