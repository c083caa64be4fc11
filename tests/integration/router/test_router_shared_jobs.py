"""A `tinyimg router` with `--redis-url` and `--result-store` in front of a `tinyimg serve` on the
same Redis and result directory (real processes): job ids are plain job ids answered from Redis,
bound to the creating key; image URLs are the router's capability URLs; a lost Redis makes the
router's readiness say "degraded", new jobs 503 `queue_unavailable`, and both recover by themselves."""

from __future__ import annotations

import re
import time

import httpx

from tests.support.processes import running_router, start_servers
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

KEYS = ("shared-key-1", "shared-key-2")


def auth(key: str = KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_done(url: str, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth(), timeout=10).json()
        if job.get("status") in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job_id)


def test_shared_jobs_through_the_router_and_a_redis_outage(tiny_model_dirs, tmp_path, redis_server):
    results = tmp_path / "results"
    jobs = {"redisUrl": redis_server.url, "resultStore": {"dir": str(results)}}
    pods = start_servers({"pod": (("flux",), {"jobs": jobs})}, tiny_model_dirs, tmp_path)
    (tmp_path / "keys").write_text("\n".join(KEYS) + "\n")
    args = [f"--backend=tiny-flux={pods['pod'].url}", "--api-keys-file", str(tmp_path / "keys"),
            "--redis-url", redis_server.url, "--result-store", str(results)]
    try:
        with running_router(args, tmp_path) as router:
            created = httpx.post(f"{router.url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 2},
                                 headers=auth(), timeout=30)
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            assert re.fullmatch(r"job_[0-9a-f]{32}", job_id)  # no pod address in it
            assert created.headers["location"] == f"{router.url}/v1/jobs/{job_id}"
            job = wait_done(router.url, job_id)
            assert job["status"] == "succeeded" and job["status_url"] == f"{router.url}/v1/jobs/{job_id}"
            url = job["images"][0]["url"]
            assert url.startswith(f"{router.url}/v1/files/jobs/{job_id}/0.png?")
            image = httpx.get(url)  # no key
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
            assert httpx.get(f"{router.url}/v1/jobs/{job_id}/images/0", headers=auth()).content == image.content
            # The key that created it reads it; another key, or none, reads an unknown job.
            for headers in (auth(KEYS[1]), {}):
                other = httpx.get(f"{router.url}/v1/jobs/{job_id}", headers=headers)
                assert other.status_code in (401, 404)
            assert httpx.get(f"{router.url}/v1/jobs/{job_id}", headers=auth(KEYS[1])).json()["error"]["code"] == "job_not_found"
            assert httpx.get(f"{router.url}/health/ready").json()["queue"] == "ok"

            redis_server.stop()
            health = httpx.get(f"{router.url}/health/ready")
            assert health.status_code == 200 and health.json()["queue"] == "unavailable"  # degraded, not dead
            refused = httpx.post(f"{router.url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite"}, headers=auth())
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_unavailable"
            assert "retry-after" in refused.headers
            generated = httpx.post(f"{router.url}/generate", json={"model": "tiny-flux", "prompt": "a kite", "steps": 1},
                                   headers=auth(), timeout=60)
            assert generated.status_code == 200  # the direct path needs no Redis
            assert wait_done(router.url, job_id)["status"] == "succeeded"  # from the stored record
            assert httpx.get(url).content == image.content

            redis_server.start()
            deadline = time.monotonic() + 30
            while httpx.get(f"{router.url}/health/ready").json().get("queue") != "ok":
                assert time.monotonic() < deadline, "the router never saw Redis again"
                time.sleep(0.2)
            while (again := httpx.post(f"{router.url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 2},
                                       headers=auth(), timeout=30)).status_code != 202:
                assert time.monotonic() < deadline, again.text
                time.sleep(0.5)
            assert wait_done(router.url, again.json()["id"])["status"] == "succeeded"
            metrics = httpx.get(f"{pods['pod'].url}/metrics").text
            assert re.search(r'^tinyimg_result_store_writes_total\{outcome="ok"\} [1-9]', metrics, re.M)
            assert re.search(r'^tinyimg_shared_queue_entries\{model="tiny-flux",state="waiting"\} 0', metrics, re.M)
            assert re.search(r'^tinyimg_shared_queue_failures_total\{operation="take"\} [1-9]', metrics, re.M)
    finally:
        for proc in pods.values():
            proc.stop()
