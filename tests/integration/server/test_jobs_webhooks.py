"""Webhooks of finished jobs, delivered over real HTTP to a receiver on loopback that fails
twice before it accepts; signatures checked as a Standard Webhooks receiver would."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.jobs_client import auth, create, read, wait_for
from tests.support.webhooks import Receiver, running_receiver, verify


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with running_receiver(failures=2) as served:
        yield served


def webhook_count(url: str, outcome: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "tinyimg_webhook_deliveries_total" and sample.labels["outcome"] == outcome:
                return sample.value
    return 0.0


def test_a_webhook_is_retried_until_the_receiver_accepts_and_is_signed(jobs_live, receiver):
    hooks, hook_url = receiver
    delivered_before = webhook_count(jobs_live, "delivered")
    job = create(jobs_live, steps=2, seed=9, webhook=hook_url).json()
    assert job["webhook"] == hook_url
    wait_for(jobs_live, job["id"], lambda j: j["status"] == "succeeded")
    deadline = time.monotonic() + 30
    while len(hooks.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more must come after the accepted one
    assert [status for status, _, _ in hooks.calls] == [500, 500, 204]
    ids = {headers["webhook-id"] for _, headers, _ in hooks.calls}
    assert ids == {f"msg_{job['id']}"}  # one id over retries: receivers drop duplicates by it
    for _, headers, body in hooks.calls:
        assert verify(headers, body)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    payload = json.loads(hooks.calls[-1][2])
    assert payload["id"] == job["id"] and payload["status"] == "succeeded"
    assert payload["images"][0]["seed"] == 9 and payload["images"][0]["url"].startswith(jobs_live)
    assert not verify(hooks.calls[-1][1], hooks.calls[-1][2] + b" ")  # the body is what is signed
    assert webhook_count(jobs_live, "delivered") == delivered_before + 1


@pytest.mark.parametrize(
    "webhook, why",
    [
        pytest.param("http://127.0.0.2:9/hook", "allow-list", id="off-list-loopback"),
        pytest.param("http://169.254.169.254/latest/meta-data", "link-local or metadata", id="metadata"),
        pytest.param("file:///etc/passwd", "http:// or https://", id="not-http"),
        pytest.param("gopher://127.0.0.1/", "http:// or https://", id="gopher"),
    ],
)
def test_webhooks_off_the_allow_list_or_to_metadata_are_refused_at_creation(jobs_live, receiver, webhook, why):
    hooks, _ = receiver
    r = create(jobs_live, steps=2, webhook=webhook)
    assert r.status_code == 422 and r.json()["error"]["field"] == "webhook" and why in r.json()["error"]["message"]
    time.sleep(0.2)
    assert hooks.calls == []


def test_the_routers_job_headers_name_the_job_and_its_webhook_and_bad_ones_are_refused(jobs_live):
    """What a router in front sends (tests/integration/router/test_router_jobs_webhooks.py has
    the router itself): the pod uses the job id it is given, answers with its own URLs, and its
    webhook carries the public id and base URL."""
    pod_job = f"job_{secrets.token_hex(16)}"
    public = f"{pod_job}.aHR0cDovL3BvZA.c2lnbmF0dXJlLXNpeHRlZW4"
    base = "http://router.example:9000/base/"
    told = {"x-tinyimg-job-id": pod_job, "x-tinyimg-public-job-id": public, "x-tinyimg-public-base-url": base}
    with running_receiver() as (hooks, hook_url):
        r = httpx.post(f"{jobs_live}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 2,
                                                      "webhook": hook_url}, headers={**auth(), **told}, timeout=30)
        assert r.status_code == 202, r.text
        assert r.json()["id"] == pod_job and r.headers["location"] == f"{jobs_live}/v1/jobs/{pod_job}"
        hooks.wait_for_calls(1)
        (_, headers, body), = hooks.calls
    assert verify(headers, body) and headers["webhook-id"] == f"msg_{pod_job}"
    payload = json.loads(body)
    url = f"http://router.example:9000/base/v1/jobs/{public}"
    assert (payload["id"], payload["status"], payload["status_url"], payload["events_url"]) == (
        public, "succeeded", url, f"{url}/events")
    assert [i["url"] for i in payload["images"]] == [f"{url}/images/0"]
    assert read(jobs_live, pod_job)["status_url"] == f"{jobs_live}/v1/jobs/{pod_job}"  # reads are the pod's own

    again = httpx.post(f"{jobs_live}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite"},
                       headers={**auth(), "x-tinyimg-job-id": pod_job}, timeout=30)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_id_taken"
    for bad, field in (
        ({"x-tinyimg-job-id": "job_../etc"}, "x-tinyimg-job-id"),
        ({"x-tinyimg-public-job-id": public}, "x-tinyimg-public-job-id"),
        ({"x-tinyimg-public-job-id": "a/b", "x-tinyimg-public-base-url": base}, "x-tinyimg-public-job-id"),
        ({"x-tinyimg-public-job-id": public, "x-tinyimg-public-base-url": "file:///etc"}, "x-tinyimg-public-base-url"),
    ):
        r = httpx.post(f"{jobs_live}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite"},
                       headers={**auth(), **bad}, timeout=30)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (bad, r.text)
