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


def test_a_job_whose_pods_keep_dying_fails_worker_lost_after_max_attempts(tiny_model_dirs, tmp_path, redis_server):
    """SIGKILL the pod running the job, twice (it comes back in place, as a restarted container):
    with jobs.maxAttempts 2 the third take fails the job with worker_lost instead of a third run."""
    from tests.support.processes import spawn, wait_until_ready, write_server_config

    jobs = {"redisUrl": redis_server.url, "resultStore": {"dir": str(tmp_path / "results")},
            "visibilityTimeoutSeconds": 1, "maxAttempts": 2}
    config = write_server_config(tmp_path / "pod.yaml", tiny_model_dirs, ("flux",), jobs=jobs,
                                 limits={"maxWidth": 512, "maxHeight": 512})
    pod = wait_until_ready(spawn("pod", ["serve", "--config", str(config)], tmp_path))
    port = int(pod.url.rsplit(":", 1)[1])
    try:
        body = {"model": "tiny-flux", "prompt": "a kite", "seed": 5, "steps": 20, "width": 512, "height": 512}
        job_id = httpx.post(f"{pod.url}/v1/jobs", json=body, timeout=30).json()["id"]
        client = redis_server.client()
        for attempt in (1, 2):
            deadline = time.monotonic() + 60
            while int(client.hget(f"tinyimg:job:{job_id}", "attempts")) < attempt:  # taken (again)
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.5)  # generating now: a 512x512 image takes seconds here
            assert httpx.get(f"{pod.url}/v1/jobs/{job_id}").json()["status"] == "running"
            pod.kill()
            pod = wait_until_ready(spawn("pod", ["serve", "--config", str(config)], tmp_path, port))
        deadline = time.monotonic() + 30
        while (job := httpx.get(f"{pod.url}/v1/jobs/{job_id}").json())["status"] != "failed":
            # "running" as the killed pod left it, until the visibility timeout lets it be taken again
            assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
            time.sleep(0.1)
        assert job["error"]["code"] == "worker_lost" and "jobs.maxAttempts 2" in job["error"]["message"]
        assert re.search(r"^tinyimg_jobs_worker_lost_total 1\.0$", httpx.get(f"{pod.url}/metrics").text, re.M)
    finally:
        pod.stop()
