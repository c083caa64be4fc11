"""The shared queue (``jobs.redisUrl``) with a real redis-server: two model servers take jobs from
one Redis stream, either answers any job, events resume on either, cancel reaches the pod that
runs it, and a lost Redis degrades the jobs API without touching /generate."""

from __future__ import annotations

import io
import re
import time

import httpx
import numpy as np
from PIL import Image

from tests.integration.server.conftest import wait_ready
from tests.support.faults import PacedFluxHandler
from tests.support.jobs_client import KEYS, auth, build_jobs_config, create, read, stream, wait_for
from tests.support.otlp import recorded_spans  # noqa: F401  (the fixture)
from tinyimg.api.app import create_app
from tinyimg.serve import BackgroundServer

TERMINAL = ("succeeded", "failed", "cancelled")


def serve(config, **engine_options):
    server = BackgroundServer(create_app(config, engine_options=engine_options)).start()
    wait_ready(server.url)
    return server


def shared_config(dirs, tmp, redis_url, **jobs):
    return build_jobs_config(dirs, tmp, redisUrl=redis_url, resultStore={"dir": str(tmp / "results")},
                             visibilityTimeoutSeconds=3, **jobs)


def pixel_distance(a: bytes, b: bytes) -> int:
    first, second = (np.asarray(Image.open(io.BytesIO(x)), dtype=int) for x in (a, b))
    return int(np.abs(first - second).max())


def finished_jobs(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(r'^tinyimg_jobs_finished_total\{model="tiny-flux",state="succeeded"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_two_servers_share_one_queue(tiny_model_dirs, tmp_path, redis_server):
    config = shared_config(tiny_model_dirs, tmp_path, redis_server.url)
    a, b = serve(config, handler_factory=PacedFluxHandler), serve(config, handler_factory=PacedFluxHandler)
    try:
        ids = []
        for seed in range(12):
            r = create(a.url, seed=seed, steps=4)
            assert r.status_code == 202, r.text
            assert r.headers["location"] == f"{a.url}/v1/jobs/{r.json()['id']}"
            ids.append(r.json()["id"])
        jobs = [wait_for(b.url, job_id, lambda j: j["status"] in TERMINAL, timeout=60) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 12
        assert [j["images"][0]["seed"] for j in jobs] == list(range(12))
        # Both pods took work from the one stream, and each job ran exactly once.
        done = finished_jobs(a.url), finished_jobs(b.url)
        assert sum(done) == 12 and min(done) > 0, done
        images = [httpx.get(j["images"][0]["url"]) for j in jobs]  # capability URLs: no key
        assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in images)
        assert len({r.content for r in images}) == 12
        # The same seed, again, is the same image (what a redelivered job relies on): within 2/255,
        # as batched kernels may round differently (the README's contract for POST /generate).
        again = create(b.url, seed=5, steps=4).json()["id"]
        again_url = wait_for(a.url, again, lambda j: j["status"] == "succeeded", timeout=60)["images"][0]["url"]
        assert pixel_distance(httpx.get(again_url).content, images[5].content) <= 2
        # Another key reads nothing; the keyed image route answers from the store.
        assert httpx.get(f"{a.url}/v1/jobs/{ids[0]}", headers=auth(KEYS[1])).status_code == 404
        assert httpx.get(f"{b.url}/v1/jobs/{ids[0]}/images/0", headers=auth()).content == images[0].content
    finally:
        a.stop()
        b.stop()


def test_events_resume_on_the_other_server_and_cancel_reaches_the_runner(tiny_model_dirs, tmp_path, redis_server):
    config = shared_config(tiny_model_dirs, tmp_path, redis_server.url, progressIntervalMs=0)
    a, b = serve(config, handler_factory=PacedFluxHandler), serve(config, handler_factory=PacedFluxHandler)
    try:
        job_id = create(a.url, seed=1, steps=10).json()["id"]
        first = stream(a.url, job_id, stop_after=2)
        assert first[0].name == "queued" and re.fullmatch(r"[0-9]+-[0-9]+", str(first[0].id))
        rest = stream(b.url, job_id, last_event_id=first[-1].id)
        names = [e.name for e in first + rest]
        assert names[-1] == "succeeded" and names.count("succeeded") == 1
        assert "started" in names and names.count("progress") >= 5
        assert len({e.id for e in first + rest}) == len(names)  # nothing twice across the two streams

        slow = create(a.url, seed=2, steps=60).json()["id"]
        wait_for(b.url, slow, lambda j: j["status"] == "running" and j["step"] >= 2, timeout=30)
        cancelled = httpx.delete(f"{b.url}/v1/jobs/{slow}", headers=auth())
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        time.sleep(2.5)  # a heartbeat (a third of the 3 s visibility timeout) later, the runner has stopped
        assert PacedFluxHandler.steps_run[-1] < 60
        job = read(a.url, slow)
        assert job["status"] == "cancelled"
        again = httpx.delete(f"{a.url}/v1/jobs/{slow}", headers=auth())
        assert again.status_code == 200 and again.json()["status"] == "cancelled"
        done = httpx.delete(f"{a.url}/v1/jobs/{job_id}", headers=auth())
        assert done.status_code == 409 and done.json()["error"]["code"] == "job_finished"
    finally:
        a.stop()
        b.stop()


def test_a_lost_redis_degrades_jobs_only_and_recovers(tiny_model_dirs, tmp_path, redis_server):
    config = shared_config(tiny_model_dirs, tmp_path, redis_server.url)
    server = serve(config)
    try:
        stored_id = create(server.url, seed=9, steps=2).json()["id"]
        stored = wait_for(server.url, stored_id, lambda j: j["status"] == "succeeded", timeout=60)
        redis_server.stop()
        generated = httpx.post(f"{server.url}/generate", json={"model": "tiny-flux", "prompt": "a kite", "steps": 1},
                               headers=auth(), timeout=60)
        assert generated.status_code == 200
        refused = create(server.url, seed=1, steps=1)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_unavailable"
        assert int(refused.headers["retry-after"]) > 0
        # What was stored is still answered (from the result store's record) and still fetches.
        assert read(server.url, stored_id)["status"] == "succeeded"
        assert httpx.get(stored["images"][0]["url"]).status_code == 200

        redis_server.start()  # the same port, no data: the server recovers by itself
        deadline = time.monotonic() + 30
        while (r := create(server.url, seed=4, steps=2)).status_code != 202:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.5)
        job = wait_for(server.url, r.json()["id"], lambda j: j["status"] in TERMINAL, timeout=60)
        assert job["status"] == "succeeded"
    finally:
        server.stop()


def test_a_pod_whose_model_failed_to_load_takes_none_of_its_jobs(tiny_model_dirs, tmp_path, redis_server):
    broken = shared_config(tiny_model_dirs, tmp_path, redis_server.url)
    broken.models[0].source = str(tmp_path / "no-such-model")
    a = BackgroundServer(create_app(broken)).start()
    b = serve(shared_config(tiny_model_dirs, tmp_path, redis_server.url))
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{a.url}/models").json()["models"][0]["state"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ids = [create(a.url, seed=i, steps=2).json()["id"] for i in range(6)]  # accepted by the broken pod
        jobs = [wait_for(a.url, job_id, lambda j: j["status"] in TERMINAL, timeout=60) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 6
        assert finished_jobs(b.url) == 6 and finished_jobs(a.url) == 0
        client = redis_server.client()
        assert [int(client.hget(f"tinyimg:job:{i}", "attempts")) for i in ids] == [1] * 6
    finally:
        a.stop()
        b.stop()


def test_a_shared_job_continues_the_trace_of_the_request_that_queued_it(tiny_model_dirs, tmp_path, redis_server,
                                                                         recorded_spans):
    """Tracing on in this process: the job's stored traceparent is the parent of the pod's take, and
    its queue, pipeline and storage spans follow in the same trace."""
    server = serve(shared_config(tiny_model_dirs, tmp_path, redis_server.url))
    try:
        caller = "00-" + "e" * 32 + "-" + "f" * 16 + "-01"
        r = httpx.post(f"{server.url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 2},
                       headers={**auth(), "traceparent": caller}, timeout=30)
        assert r.status_code == 202, r.text
        wait_for(server.url, r.json()["id"], lambda j: j["status"] == "succeeded", timeout=60)
        trace_id = int("e" * 32, 16)
        wanted = {"POST /v1/jobs", "shared_queue.take", "queue", "pipeline", "encode_image", "store_result"}
        deadline = time.monotonic() + 10
        while not wanted <= {s.name for s in recorded_spans.get_finished_spans() if s.context.trace_id == trace_id}:
            assert time.monotonic() < deadline, sorted({s.name for s in recorded_spans.get_finished_spans()})
            time.sleep(0.05)
        spans = {s.name: s for s in recorded_spans.get_finished_spans() if s.context.trace_id == trace_id}
        post, take = spans["POST /v1/jobs"], spans["shared_queue.take"]
        assert post.parent.span_id == int("f" * 16, 16) and take.parent.span_id == post.context.span_id
        for name in ("queue", "pipeline", "encode_image", "store_result"):
            assert spans[name].parent.span_id == take.context.span_id, name
        assert take.attributes["tinyimg.job_id"] == r.json()["id"] and take.attributes["tinyimg.attempt"] == 1
    finally:
        server.stop()
