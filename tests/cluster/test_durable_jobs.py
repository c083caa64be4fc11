"""Durable jobs in the cluster: the chart's own Redis (a StatefulSet the process kubelet runs as
redis-server, its password from the chart's Secret, reachable only from the router and the model
pods) and a ReadWriteMany results volume shared by the model pods and the routers. Installed with
real helm; the model served by two pods.

- Chaos: 300 jobs through the router Service while a model pod is SIGKILLed every 10 s and a router
  pod once: every job ends `succeeded` exactly once, one stored image each, fetched by its URL
  without a key, byte-identical to its seed's image (figures printed, kept in BENCHMARKS.md).
- A job's event stream resumes with `Last-Event-ID` on the other router replica after the first is killed.
- Finished jobs and their images outlive their pods: after the model is scaled to zero, both still answer.
Tests run in file order on one cluster.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.cluster.conftest import IMAGEMODELS, NAMESPACE, RELEASE, imagemodel_manifest, install_chart, model_pods
from tests.support.jobs_client import stream

MODEL = "tiny-flux"
JOBS, CALM_JOBS, SEEDS, STEPS = 300, 40, 10, 8
KILL_EVERY = 10.0
TERMINAL = ("succeeded", "failed", "cancelled")
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def shared(cluster, tiny_model_dirs, tmp_path_factory):
    install_chart(cluster, "--set", "redis.enabled=true", "--set", "storage.pvc.create=true",
                  "--set", "server.jobs.visibilityTimeoutSeconds=3", "--set", "server.jobs.maxAttempts=5")
    cluster.wait_until(lambda: ((cluster.get("apps/v1/statefulsets", NAMESPACE, f"{RELEASE}-redis") or {})
                                .get("status") or {}).get("readyReplicas") == 1, timeout=60, what="redis ready")
    manifest = tmp_path_factory.mktemp("durable") / "model.yaml"
    # One image per pipeline call: a job run again, alone or not, makes the same bytes.
    manifest.write_text(imagemodel_manifest("flux", tiny_model_dirs["flux"], MODEL, replicas=2,
                                            runtime={"device": "cpu", "cpuFallback": True, "maxBatchSize": 1, "queueSize": 16}))
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(manifest))
    cluster.wait_until(lambda: len(model_pods(cluster, MODEL)) == 2, timeout=180, what="two model pods ready")
    url = cluster.service_url(NAMESPACE, f"{RELEASE}-router")
    cluster.wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=5).json().get("models", {}).get(MODEL, {})
                       .get("ready_replicas") == 2, timeout=60, what="the router sees both pods")
    return cluster, url


def container_pid(cluster, pod_name: str) -> int:
    def find() -> int:
        for runtime in cluster.kubelet.pods.values():
            if runtime.name == pod_name and runtime.containers[0].popen is not None:
                return runtime.containers[0].popen.pid
        raise KeyError(pod_name)
    return cluster.call(find)


def busy_pod(pods: list[dict], within: float = 3.0) -> str | None:
    """A model pod generating right now (its /status says so), so the kill lands on a running job."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for pod in pods:
            try:
                models = httpx.get(f"http://{pod['status']['podIP']}:8000/status", timeout=1).json()["models"]
            except (httpx.HTTPError, ValueError, KeyError):
                continue
            if any(m["in_flight"] for m in models.values()):
                return pod["metadata"]["name"]
        time.sleep(0.02)
    return None


def submit(url: str, seed: int) -> str:
    """POST /v1/jobs, retried while no router or no pod can take it (a client would too)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            r = httpx.post(f"{url}/v1/jobs", json={"model": MODEL, "prompt": "a kite", "seed": seed, "steps": STEPS},
                           timeout=30)
            if r.status_code == 202:
                return r.json()["id"]
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "no 202 for two minutes"
        time.sleep(0.2)


def submit_paced(url: str, count: int, on_batch=None) -> list[str]:
    ids: list[str] = []
    with ThreadPoolExecutor(8) as pool:
        for start in range(0, count, 10):  # about 8 a second
            ids += pool.map(lambda i: submit(url, i % SEEDS), range(start, min(count, start + 10)))
            if on_batch is not None:
                on_batch(start)
            time.sleep(1.2)
    return ids


def wait_all(url: str, ids: list[str], timeout: float) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids):
        assert time.monotonic() < deadline, f"{len(ids) - len(done)} jobs unfinished"
        for job_id in [i for i in ids if i not in done]:
            try:
                job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
            except (httpx.HTTPError, ValueError):
                continue
            if job.get("status") in TERMINAL:
                done[job_id] = job
        time.sleep(0.5)
    return done


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_three_hundred_jobs_survive_pod_kills_and_a_router_kill(shared, tmp_path):
    cluster, url = shared
    calm = wait_all(url, submit_paced(url, CALM_JOBS), 300)
    reference = {j["images"][0]["seed"]: httpx.get(j["images"][0]["url"]).content for j in calm.values()}
    assert len(reference) == SEEDS

    stop, kills = threading.Event(), []

    def killer() -> None:
        rng = random.Random(19)
        while not stop.wait(KILL_EVERY):
            pods = model_pods(cluster, MODEL, ready_only=False)
            victim = busy_pod(pods) or rng.choice(pods)["metadata"]["name"]
            try:
                os.killpg(container_pid(cluster, victim), signal.SIGKILL)
                kills.append(victim)
            except (KeyError, ProcessLookupError):  # restarting right now: the next tick picks again
                pass

    def kill_a_router(start: int) -> None:
        if start == 150:
            router = cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "router"})[0]
            os.killpg(container_pid(cluster, router["metadata"]["name"]), signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        ids = submit_paced(url, JOBS, kill_a_router)
        chaotic = wait_all(url, ids, 600)
    finally:
        stop.set()
        thread.join()
    elapsed = time.monotonic() - started

    lost = [j for j in chaotic.values() if j["status"] != "succeeded"]
    assert not lost, lost[:3]
    assert len(chaotic) == JOBS and len(kills) >= 3, kills
    for job in chaotic.values():
        image = job["images"][0]
        fetched = httpx.get(image["url"])  # no key: the URL is the permission
        assert fetched.status_code == 200 and fetched.content == reference[image["seed"]]
    results = next((cluster.workdir / "node" / "claims" / NAMESPACE).glob("*-results"))
    for job_id in chaotic:
        stored = sorted(p.name for p in (results / "jobs" / job_id).iterdir())
        assert stored == ["0.png", "0.png.meta", "job.json", "job.json.meta"], stored
    redeliveries = redis_redeliveries(cluster, list(chaotic))
    calm_l = sorted(j["finished_at"] - j["created_at"] for j in calm.values())
    chaos_l = sorted(j["finished_at"] - j["created_at"] for j in chaotic.values())
    figures = {"jobs": JOBS, "lost": len(lost), "pod_kills": len(kills), "router_kills": 1, "redeliveries": redeliveries,
               "seconds": round(elapsed, 1), "calm_p50": round(statistics.median(calm_l), 3),
               "calm_p95": round(quantile(calm_l, 0.95), 3), "chaos_p50": round(statistics.median(chaos_l), 3),
               "chaos_p95": round(quantile(chaos_l, 0.95), 3)}
    print("cluster chaos figures:", json.dumps(figures))
    assert redeliveries >= 1  # the kills landed on running jobs, and those were taken again


def redis_redeliveries(cluster, ids: list[str]) -> int:
    """Attempts past the first, summed over the jobs: read from the chart's Redis (its password
    from the chart's Secret), as an operator would with redis-cli."""
    import base64

    import redis

    secret = cluster.get("v1/secrets", NAMESPACE, f"{RELEASE}-redis")
    password = base64.b64decode(secret["data"]["password"]).decode()
    pod = cluster.get("v1/pods", NAMESPACE, f"{RELEASE}-redis-0")
    client = redis.Redis(host=pod["status"]["podIP"], port=6379, password=password)
    return sum(max(0, int(client.hget(f"tinyimg:job:{i}", "attempts") or 1) - 1) for i in ids)


def test_an_event_stream_resumes_on_the_other_router_after_the_first_is_killed(shared):
    cluster, _ = shared
    routers = [p for p in cluster.list("v1/pods", NAMESPACE, labels={"app.kubernetes.io/component": "router"})
               if not p["metadata"].get("deletionTimestamp")]
    cluster.wait_until(lambda: all(httpx.get(f"http://{p['status']['podIP']}:8000/health/ready", timeout=5).status_code == 200
                                   for p in routers), timeout=60, what="both routers ready")
    first, second = (f"http://{p['status']['podIP']}:8000" for p in routers[:2])
    job_id = submit(first, 3)
    head = stream(first, job_id, stop_after=2)
    os.killpg(container_pid(cluster, routers[0]["metadata"]["name"]), signal.SIGKILL)
    rest = stream(second, job_id, last_event_id=head[-1].id)
    names = [e.name for e in head + rest]
    assert names[0] == "queued" and names[-1] == "succeeded" and names.count("succeeded") == 1
    assert len({e.id for e in head + rest}) == len(names)


def test_finished_jobs_and_their_images_outlive_their_pods(shared):
    cluster, url = shared
    job_id = submit(url, 4)
    job = wait_all(url, [job_id], 120)[job_id]
    image = httpx.get(job["images"][0]["url"]).content
    cluster.kubectl("scale", "-n", NAMESPACE, f"{IMAGEMODELS.split('/')[-1]}/{MODEL}", "--replicas=0")
    cluster.wait_until(lambda: not model_pods(cluster, MODEL, ready_only=False), timeout=120, what="no model pods")
    again = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
    assert again["status"] == "succeeded"
    assert httpx.get(again["images"][0]["url"]).content == image
    assert httpx.get(job["images"][0]["url"]).content == image
