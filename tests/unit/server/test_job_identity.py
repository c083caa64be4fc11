"""The router's job headers as a pod reads them (tinyimg.api.jobs.read_job_identity), and the
webhook body built from them: pure functions, no server."""

from __future__ import annotations

import dataclasses

import pytest

from tinyimg.core.errors import InvalidField
from tinyimg.core.jobs import JobIdentity, read_job_identity, sign_job_headers
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.jobviews import build_job_response, build_webhook_payload, read_job_field
from tinyimg.wire.contract import JobResponse
from tinyimg.wire.requests import JobRequest

POD_JOB = "job_" + "0123456789abcdef" * 2
PUBLIC = f"{POD_JOB}.aHR0cDovL3BvZA.c2lnbmF0dXJlLXNpeHRlZW4"
BASE = "https://images.example.com/tinyimg/"


def test_no_headers_is_a_direct_client():
    assert read_job_identity({}) == JobIdentity()


def test_the_routers_headers_are_read():
    headers = {"x-tinyimg-job-id": POD_JOB, "x-tinyimg-public-job-id": PUBLIC, "x-tinyimg-public-base-url": BASE}
    assert read_job_identity(headers) == JobIdentity(POD_JOB, PUBLIC, BASE)


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        pytest.param({"x-tinyimg-job-id": "job_ABC"}, "x-tinyimg-job-id", id="job-id-not-hex"),
        pytest.param({"x-tinyimg-job-id": POD_JOB + "0"}, "x-tinyimg-job-id", id="job-id-too-long"),
        pytest.param({"x-tinyimg-public-job-id": PUBLIC}, "x-tinyimg-public-job-id", id="id-without-base"),
        pytest.param({"x-tinyimg-public-base-url": BASE}, "x-tinyimg-public-job-id", id="base-without-id"),
        pytest.param({"x-tinyimg-public-job-id": "a/../b", "x-tinyimg-public-base-url": BASE},
                     "x-tinyimg-public-job-id", id="id-with-slash"),
        pytest.param({"x-tinyimg-public-job-id": "a" * 1001, "x-tinyimg-public-base-url": BASE},
                     "x-tinyimg-public-job-id", id="id-too-long"),
        pytest.param({"x-tinyimg-public-job-id": PUBLIC, "x-tinyimg-public-base-url": "javascript:alert(1)"},
                     "x-tinyimg-public-base-url", id="base-not-http"),
        pytest.param({"x-tinyimg-public-job-id": PUBLIC, "x-tinyimg-public-base-url": "http:///x"},
                     "x-tinyimg-public-base-url", id="base-without-host"),
        pytest.param({"x-tinyimg-public-job-id": PUBLIC, "x-tinyimg-public-base-url": "http://a b/"},
                     "x-tinyimg-public-base-url", id="base-with-space"),
    ],
)
def test_malformed_headers_are_422_naming_the_header(headers, field):
    with pytest.raises(InvalidField) as err:
        read_job_identity(headers)
    assert (err.value.status, err.value.field) == (422, field)


def build_record(**fields) -> JobRecord:
    params = GenerationParams("a kite", None, 64, 64, 2, 1.0, (7,))
    record = JobRecord(POD_JOB, "tiny-flux", params, "png", base_url="http://10.0.0.7:8000/", **fields)
    record.status, record.seeds, record.images = "succeeded", [7], [b"png"]
    return record


def test_a_webhook_body_carries_the_public_id_and_urls_when_a_router_named_them():
    payload = build_webhook_payload(build_record(public_id=PUBLIC, public_base_url=BASE))
    url = f"https://images.example.com/tinyimg/v1/jobs/{PUBLIC}"
    assert (payload["id"], payload["status_url"], payload["events_url"]) == (PUBLIC, url, f"{url}/events")
    assert payload["images"] == [{"url": f"{url}/images/0", "seed": 7, "format": "png"}]


def test_a_webhook_body_of_a_direct_job_is_the_pods_own():
    payload = build_webhook_payload(build_record())
    assert payload["id"] == POD_JOB and payload["status_url"] == f"http://10.0.0.7:8000/v1/jobs/{POD_JOB}"


def test_with_the_routers_secret_only_signed_job_headers_are_believed():
    secret = b"the router's job secret, 32 bytes"
    job_id, public_id, base = "job_" + "a" * 32, "job_" + "a" * 32 + ".tag.mac", "http://router.example/"
    headers = {"x-tinyimg-job-id": job_id, "x-tinyimg-public-job-id": public_id, "x-tinyimg-public-base-url": base}
    signed = {**headers, "x-tinyimg-job-signature": sign_job_headers(secret, job_id, public_id, base)}
    assert read_job_identity(signed, secret) == JobIdentity(job_id, public_id, base)
    assert read_job_identity(headers, secret) == JobIdentity()  # a direct client's: ignored
    forged = {**signed, "x-tinyimg-public-base-url": "http://evil.example/"}
    assert read_job_identity(forged, secret) == JobIdentity()
    assert read_job_identity(headers) == JobIdentity(job_id, public_id, base)  # no secret: believed, as before


def test_every_field_of_the_job_resource_is_built_or_read_from_the_record_or_its_request():
    """So a new job field is one field on the request (or the record) and one on JobResponse."""
    built = {"id", "status_url", "events_url", "parameters", "timings", "images", "error"}
    readable = {f.name for f in dataclasses.fields(JobRecord)}
    assert set(JobResponse.model_fields) <= built | readable | set(JobRequest.model_fields)
    record = build_record(request=JobRequest(model="tiny-flux", prompt="a kite", preview=True), webhook="https://h.example/x")
    answer = build_job_response("http://pod/", record)
    assert (answer.model, answer.webhook, answer.preview, answer.total_steps) == ("tiny-flux", "https://h.example/x", False, 0)
    assert read_job_field(record, "prompt") == "a kite"  # a request field no record field shadows
