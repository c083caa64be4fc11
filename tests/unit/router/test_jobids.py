"""Router job ids: signed for the pod and the key; anything else reads as an unknown job."""

from __future__ import annotations

import base64
import re

import pytest

from tinyimg.core.jobs import JobNotFound
from tinyimg.router.jobids import build_router_job_id, read_router_job_id
from tinyimg.router.routes.jobs import build_job_headers, rewrite_job

SECRET = b"s" * 32
POD_JOB = "job_" + "a" * 32
POD = "http://10.0.0.7:8000"
KNOWN = ["http://10.0.0.6:8000", POD, "http://10.0.0.8:8000"]


def test_an_id_resolves_to_its_pod_job_and_pod_on_any_replica_with_the_secret():
    job_id = build_router_job_id(SECRET, POD_JOB, POD, "keyhash")
    assert read_router_job_id(bytes(SECRET), job_id, "keyhash", KNOWN) == (POD_JOB, POD)


def test_an_id_does_not_show_its_pod_address():
    job_id = build_router_job_id(SECRET, POD_JOB, POD, "keyhash")
    parts = job_id.split(".")
    decoded = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in parts[1:]]
    assert not any(b"10.0.0.7" in d or b"8000" in d for d in decoded) and "10.0.0.7" not in job_id


def test_a_well_signed_id_whose_pod_no_router_knows_is_a_pod_gone_not_a_forgery():
    job_id = build_router_job_id(SECRET, POD_JOB, POD, "k")
    assert read_router_job_id(SECRET, job_id, "k", ["http://10.0.0.9:8000"]) == (POD_JOB, None)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda i: i.replace(i.split(".")[1], build_router_job_id(SECRET, POD_JOB, "http://10.0.0.8:8000", "k").split(".")[1]), id="other-pod"),
        pytest.param(lambda i: "job_" + "b" * 32 + i[36:], id="other-pod-job"),
        pytest.param(lambda i: i[:-1] + ("A" if i[-1] != "A" else "B"), id="mac"),
        pytest.param(lambda i: i + ".x", id="extra-part"),
        pytest.param(lambda i: POD_JOB, id="bare-pod-id"),
        pytest.param(lambda i: "../../etc", id="garbage"),
    ],
)
def test_a_forged_or_altered_id_is_not_found(tamper):
    job_id = build_router_job_id(SECRET, POD_JOB, POD, "k")
    with pytest.raises(JobNotFound) as err:
        read_router_job_id(SECRET, tamper(job_id), "k", KNOWN)
    assert (err.value.status, err.value.code) == (404, "job_not_found")


def test_another_key_or_another_secret_reads_it_as_unknown():
    job_id = build_router_job_id(SECRET, POD_JOB, POD, "alice")
    for secret, key in ((SECRET, "bob"), (b"t" * 32, "alice")):
        with pytest.raises(JobNotFound):
            read_router_job_id(secret, job_id, key, KNOWN)


def test_rewrite_job_puts_the_router_id_and_urls_everywhere():
    files = [f"{POD}/v1/files/jobs/{POD_JOB}/{i}.png?expires=9&sig=abc" for i in (0, 1)]
    pod = {"id": POD_JOB, "status": "succeeded", "status_url": f"{POD}/v1/jobs/{POD_JOB}",
           "events_url": "x", "images": [{"url": f"{POD}/v1/jobs/{POD_JOB}/images/0", "seed": 1}, {"url": files[1], "seed": 2}]}
    out = rewrite_job(pod, "RID", "http://router.example/base/")
    assert out["id"] == "RID" and out["status_url"] == "http://router.example/base/v1/jobs/RID"
    assert out["events_url"] == "http://router.example/base/v1/jobs/RID/events"
    assert [i["url"] for i in out["images"]] == [f"http://router.example/base/v1/jobs/RID/images/{i}" for i in (0, 1)]
    assert [i["seed"] for i in out["images"]] == [1, 2]
    # A router that reads the pods' result directory serves their capability URLs itself.
    shared = rewrite_job({**pod, "images": [{"url": files[0], "seed": 1}]}, "RID", "http://router.example/base/", True)
    assert shared["images"][0]["url"] == f"http://router.example/base/v1/files/jobs/{POD_JOB}/0.png?expires=9&sig=abc"
    # An S3 presigned URL is the bucket's: it stays.
    s3 = "https://bucket.s3.amazonaws.com/jobs/x/0.png?X-Amz-Signature=1"
    assert rewrite_job({**pod, "images": [{"url": s3, "seed": 1}]}, "RID", "http://r/")["images"][0]["url"] == s3


def test_the_job_headers_name_a_fresh_pod_job_and_the_router_id_that_resolves_to_it_on_that_pod():
    first, second = (dict(build_job_headers(SECRET, POD, "alice", "http://router.example/")) for _ in range(2))
    pod_job = first[b"x-tinyimg-job-id"].decode()
    assert re.fullmatch(r"job_[0-9a-f]{32}", pod_job) and pod_job != second[b"x-tinyimg-job-id"].decode()
    public = first[b"x-tinyimg-public-job-id"].decode()
    assert read_router_job_id(SECRET, public, "alice", KNOWN) == (pod_job, POD)
    assert first[b"x-tinyimg-public-base-url"] == b"http://router.example/"
