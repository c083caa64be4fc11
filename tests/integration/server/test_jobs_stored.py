"""One machine, no Redis: finished jobs go to the directory result store, so a restart keeps them
and their images, and image URLs are capability URLs (no key; altered or expired: 403)."""

from __future__ import annotations

import io
import json
import time

import httpx
from PIL import Image

from tests.integration.server.conftest import wait_ready
from tests.support.jobs_client import KEYS, auth, build_jobs_config, create, read, stream, wait_for
from tinyimg.api.app import create_app
from tinyimg.serve import BackgroundServer


def serve(config):
    server = BackgroundServer(create_app(config)).start()
    wait_ready(server.url)
    return server


def finished(job):
    return job["status"] in ("succeeded", "failed", "cancelled")


def test_a_restart_keeps_finished_jobs_and_their_image_urls(tiny_model_dirs, tmp_path):
    config = build_jobs_config(tiny_model_dirs, tmp_path, resultStore={"dir": str(tmp_path / "results")})
    server = serve(config)
    first_url = server.url
    try:
        created = create(server.url, seed=7, steps=2, num_images=2)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        job = wait_for(server.url, job_id, finished)
        assert job["status"] == "succeeded"
        urls = [image["url"] for image in job["images"]]
        assert all(u.startswith(f"{server.url}/v1/files/jobs/{job_id}/") and "sig=" in u for u in urls)
        before = [httpx.get(u).content for u in urls]  # no Authorization
        by_route = httpx.get(f"{server.url}/v1/jobs/{job_id}/images/1", headers=auth()).content
        assert by_route == before[1]
    finally:
        server.stop()
    stored = sorted(p.name for p in (tmp_path / "results" / "jobs" / job_id).iterdir())
    assert stored == ["0.png", "0.png.meta", "1.png", "1.png.meta", "job.json", "job.json.meta"]

    server = serve(config)  # a new process over the same directory
    try:
        again = read(server.url, job_id)
        assert again["status"] == "succeeded" and [i["seed"] for i in again["images"]] == [7, 8]
        assert again["parameters"]["prompt"] == "a kite"
        # The URLs handed out before still work (the new process listens on another port here).
        assert [httpx.get(u.replace(first_url, server.url)).content for u in urls] == before
        fresh = [httpx.get(i["url"]).content for i in again["images"]]
        assert fresh == before
        other = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth(KEYS[1]))
        assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
        events = stream(server.url, job_id)
        assert [e.name for e in events] == ["succeeded"]
        assert httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=auth()).json()["error"]["code"] == "job_finished"
    finally:
        server.stop()

    image = Image.open(io.BytesIO(before[0]))
    parameters = json.loads(image.text["parameters"])  # the PNG carries how it was made
    assert parameters["seed"] == 7 and parameters["prompt"] == "a kite" and parameters["model"] == "tiny-flux"
    meta = json.loads((tmp_path / "results" / "jobs" / job_id / "1.png.meta").read_text())
    assert meta["content_type"] == "image/png" and meta["metadata"]["tinyimg-seed"] == "8"


def test_altered_and_expired_urls_are_403(tiny_model_dirs, tmp_path):
    config = build_jobs_config(tiny_model_dirs, tmp_path, resultStore={"dir": str(tmp_path / "results")},
                               urlTtlSeconds=2)
    server = serve(config)
    try:
        job_id = create(server.url, seed=3, steps=1).json()["id"]
        url = wait_for(server.url, job_id, finished)["images"][0]["url"]
        assert httpx.get(url).status_code == 200
        base, _, query = url.partition("?")
        expires = int(query.split("expires=")[1].split("&")[0])
        altered = [
            url[:-1] + ("A" if url[-1] != "A" else "B"),  # one character of the signature
            url.replace(f"expires={expires}", f"expires={expires + 3600}"),  # a later expiry
            base.replace("/0.png", "/1.png") + "?" + query,  # another image under the same signature
            base + "?expires=99999999999999999999&sig=x",  # a huge number
            base,  # no signature at all
        ]
        for bad in altered:
            r = httpx.get(bad)
            assert r.status_code == 403 and r.json()["error"]["code"] == "url_invalid", bad
        record = httpx.get(f"{server.url}/v1/files/jobs/{job_id}/job.json?{query}")
        assert record.status_code == 403  # the record (it holds the key's hash) is never a file URL
        time.sleep(max(0.0, expires - time.time()) + 1.1)
        r = httpx.get(url)
        assert r.status_code == 403 and r.json()["error"]["code"] == "url_expired"
        assert read(server.url, job_id)["images"][0]["url"] != url  # reading the job again signs a fresh one
        assert httpx.get(read(server.url, job_id)["images"][0]["url"]).status_code == 200
    finally:
        server.stop()


def test_tinyimg_serve_keeps_results_under_its_working_directory_by_default(tiny_model_dirs, tmp_path):
    """What `make run` does: no resultStore in the config, results in .tinyimg/results under the
    working directory; a restarted process answers the job and its image URL."""
    from tests.support.processes import spawn, wait_until_ready, write_server_config

    config = write_server_config(tmp_path / "serve.yaml", tiny_model_dirs, ("flux",))
    server = wait_until_ready(spawn("serve", ["serve", "--config", str(config)], tmp_path))
    port = int(server.url.rsplit(":", 1)[1])
    try:
        job_id = httpx.post(f"{server.url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 2},
                            timeout=30).json()["id"]
        deadline = time.monotonic() + 60
        while (job := httpx.get(f"{server.url}/v1/jobs/{job_id}").json())["status"] != "succeeded":
            assert time.monotonic() < deadline and not finished(job), job
            time.sleep(0.05)
        image = httpx.get(job["images"][0]["url"]).content
        assert (tmp_path / "serve.cwd" / ".tinyimg" / "results" / "jobs" / job_id / "0.png").read_bytes() == image
        server.stop()
        server = wait_until_ready(spawn("serve", ["serve", "--config", str(config)], tmp_path, port))
        again = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
        assert again["status"] == "succeeded"
        assert httpx.get(job["images"][0]["url"]).content == image
    finally:
        server.stop()


def test_a_stored_jobs_webhook_carries_its_capability_urls(tiny_model_dirs, tmp_path):
    from tests.support.webhooks import running_receiver

    config = build_jobs_config(tiny_model_dirs, tmp_path, resultStore={"dir": str(tmp_path / "results")})
    server = serve(config)
    try:
        with running_receiver(failures=0) as (hooks, hook_url):
            job_id = create(server.url, seed=21, steps=1, webhook=hook_url).json()["id"]
            hooks.wait_for_calls(1)
            payload = json.loads(hooks.calls[0][2])
            assert payload["id"] == job_id and payload["status"] == "succeeded"
            url = payload["images"][0]["url"]
            assert url.startswith(f"{server.url}/v1/files/jobs/{job_id}/0.png?")
            assert httpx.get(url).status_code == 200  # the receiver needs no key to fetch it
    finally:
        server.stop()
