"""SIGTERM on a pod of the shared queue loses nothing and delays nothing: the pod stops taking
work at once, finishes and stores what it runs, and the other pod takes the rest. The visibility
timeout is 30 s here, so a job that had to wait for a redelivery would show as 30 s late."""

from __future__ import annotations

import re
import signal
import time

import httpx

from tests.support.processes import start_servers
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

JOBS = 12


def finished(url: str) -> float:
    found = re.search(r'^tinyimg_jobs_finished_total\{model="tiny-flux",state="succeeded"\} (\S+)$',
                      httpx.get(f"{url}/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_drained_pod_finishes_what_it_runs_and_the_other_takes_the_rest(tiny_model_dirs, tmp_path, redis_server):
    jobs = {"redisUrl": redis_server.url, "resultStore": {"dir": str(tmp_path / "results")},
            "visibilityTimeoutSeconds": 30, "progressIntervalMs": 0}
    spec = (("flux",), {"jobs": jobs, "runtime": {"maxBatchSize": 1}})
    pods = start_servers({"pod-a": spec, "pod-b": spec}, tiny_model_dirs, tmp_path)
    a, b = pods["pod-a"], pods["pod-b"]
    try:
        ids = [httpx.post(f"{a.url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "seed": i, "steps": 20,
                                                             "width": 128, "height": 128},
                          timeout=30).json()["id"] for i in range(JOBS)]
        deadline = time.monotonic() + 30
        while not any(httpx.get(f"{b.url}/v1/jobs/{i}").json()["status"] == "running" for i in ids):
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.02)
        a.popen.send_signal(signal.SIGTERM)
        drained_at = time.monotonic()
        done: dict[str, dict] = {}
        while len(done) < JOBS:
            assert time.monotonic() - drained_at < 25, f"{JOBS - len(done)} jobs late: one waited for a redelivery"
            for job_id in ids:
                job = httpx.get(f"{b.url}/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    done[job_id] = job
            time.sleep(0.1)
        assert [j["status"] for j in done.values()] == ["succeeded"] * JOBS
        assert a.popen.wait(30) == 0  # a clean exit after its drain
        assert 0 < finished(b.url) < JOBS  # b took over the rest; a had run some before and during its drain
        client = redis_server.client()
        for job_id in ids:
            names = [f[b"name"] for _, f in client.xrange(f"tinyimg:events:{job_id}")]
            assert names.count(b"succeeded") == 1 and names[-1] == b"succeeded"
            assert int(client.hget(f"tinyimg:job:{job_id}", "attempts")) == 1  # nobody took one twice
    finally:
        for proc in pods.values():
            proc.stop()
