"""The S3 result store over HTTP, against moto's S3 server (tests/support/stores.py says why moto,
and what it does not check): images and records written with their metadata, image URLs that are
presigned GETs needing no key, jobs read back after a restart, OpenAI's url answers."""

from __future__ import annotations

import asyncio
import io
import json
from urllib.parse import parse_qs, urlsplit

import httpx
from openai import OpenAI
from PIL import Image

from tests.integration.server.conftest import wait_ready
from tests.support.jobs_client import KEYS, build_jobs_config, create, read, wait_for
from tests.support.stores import S3_ENV
from tinyimg.api.app import create_app
from tinyimg.durable.results import S3ResultStore
from tinyimg.serve import BackgroundServer


def serve(config):
    server = BackgroundServer(create_app(config)).start()
    wait_ready(server.url)
    return server


def test_results_in_an_s3_bucket_with_presigned_urls(tiny_model_dirs, tmp_path, s3_server, monkeypatch):
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    store = {"s3": {"bucket": s3_server.bucket, "endpoint": s3_server.endpoint, "prefix": "team-a"}}
    config = build_jobs_config(tiny_model_dirs, tmp_path, resultStore=store, urlTtlSeconds=600)
    server = serve(config)
    try:
        job_id = create(server.url, seed=11, steps=2).json()["id"]
        job = wait_for(server.url, job_id, lambda j: j["status"] in ("succeeded", "failed"))
        assert job["status"] == "succeeded", job
        url = job["images"][0]["url"]
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == s3_server.endpoint
        assert parts.path == f"/{s3_server.bucket}/team-a/jobs/{job_id}/0.png"
        query = parse_qs(parts.query)
        assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        fetched = httpx.get(url)  # no Authorization: the presigned URL is the permission
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert json.loads(Image.open(io.BytesIO(fetched.content)).text["parameters"])["seed"] == 11
        # The objects as another S3 client sees them (signed requests, through obstore).
        bucket = S3ResultStore(s3_server.bucket, s3_server.endpoint, prefix="team-a")
        image = asyncio.run(bucket.get(f"jobs/{job_id}/0.png"))
        assert image is not None and image.data == fetched.content and image.content_type == "image/png"
        assert image.metadata["tinyimg-seed"] == "11" and image.metadata["tinyimg-job"] == job_id
        assert json.loads(image.metadata["tinyimg-parameters"])["steps"] == 2
        stored = asyncio.run(bucket.get(f"jobs/{job_id}/job.json"))
        assert stored is not None
        record = json.loads(stored.data)
        assert record["status"] == "succeeded" and record["order"]["image_keys"] == [f"jobs/{job_id}/0.png"]

        client = OpenAI(base_url=f"{server.url}/v1", api_key=KEYS[0])
        answer = client.images.generate(model="tiny-flux", prompt="a kite", size="64x64", response_format="url",
                                        extra_body={"seed": 12})
        assert answer.data[0].url.startswith(f"{s3_server.endpoint}/{s3_server.bucket}/team-a/jobs/")
        assert httpx.get(answer.data[0].url).status_code == 200
    finally:
        server.stop()
    server = serve(config)  # a new process: the job is read back from the bucket
    try:
        again = read(server.url, job_id)
        assert again["status"] == "succeeded" and again["images"][0]["seed"] == 11
        assert httpx.get(again["images"][0]["url"]).content == fetched.content
    finally:
        server.stop()
    # The TTL is the store's: a sweep deletes what is older than the result TTL, and nothing younger.
    assert asyncio.run(bucket.sweep(3600)) == 0
    assert asyncio.run(bucket.sweep(0)) >= 2  # the job's and the OpenAI answer's
    assert asyncio.run(bucket.get(f"jobs/{job_id}/0.png")) is None
