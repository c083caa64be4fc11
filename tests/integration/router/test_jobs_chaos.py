"""Chaos on the shared queue, with real processes: 300 jobs through a `tinyimg router` to two
`tinyimg serve` pods sharing one redis-server and one result directory, while a pod is SIGKILLed
(and started again in its place) every 10 s and the router is restarted once. Every job must end
`succeeded` exactly once, with one stored image, fetched by its URL without a key, identical to
its seed's image. The figures (jobs lost, redeliveries, latency added by the kills) are printed
and kept in BENCHMARKS.md."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bench.harness import free_port
from tests.support.processes import Proc, spawn, wait_until_ready, write_server_config
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)

JOBS, BASELINE_JOBS, SEEDS = 300, 40, 10
STEPS = 12  # long enough (about 0.2 s a job here) that kills land on running jobs
KILL_EVERY = 10.0
pytestmark = pytest.mark.timeout(900)


class Chaos:
    def __init__(self, tmp: Path, dirs, redis_url: str):
        self.tmp, self.redis_url = tmp, redis_url
        jobs = {"redisUrl": redis_url, "resultStore": {"dir": str(tmp / "results")}, "visibilityTimeoutSeconds": 2,
                "maxAttempts": 5}
        # One image per pipeline call: a job run again, alone or not, makes the same bytes.
        self.config = write_server_config(tmp / "pod.yaml", dirs, ("flux",), jobs=jobs,
                                          runtime={"maxBatchSize": 1, "queueSize": 16})
        self.ports = {name: free_port() for name in ("pod-a", "pod-b")}
        self.router_port = free_port()
        self.pods: dict[str, Proc] = {}
        self.router: Proc | None = None
        self.kills = 0

    def start_pod(self, name: str) -> Proc:
        self.pods[name] = spawn(name, ["serve", "--config", str(self.config)], self.tmp, self.ports[name])
        return self.pods[name]

    def start_router(self) -> Proc:
        backends = [f"--backend=tiny-flux=http://127.0.0.1:{port}" for port in self.ports.values()]
        self.router = spawn("router", ["router", *backends, "--poll-interval", "0.2", "--redis-url", self.redis_url,
                                       "--result-store", str(self.tmp / "results")], self.tmp, self.router_port)
        return wait_until_ready(self.router, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    def kill_and_replace(self, name: str) -> None:
        self.pods[name].kill()
        self.kills += 1
        self.start_pod(name)  # Kubernetes starts a new pod; it takes seconds to load before it serves

    def stop(self) -> None:
        for proc in [*self.pods.values(), *([self.router] if self.router else [])]:
            proc.kill()


def busy_pod(chaos: Chaos, within: float = 3.0) -> str | None:
    """A pod generating right now (its /status says so), so the kill lands on a running job."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for name, proc in sorted(chaos.pods.items()):
            try:
                models = httpx.get(f"{proc.url}/status", timeout=1).json()["models"]
            except (httpx.HTTPError, ValueError, KeyError):
                continue
            if any(m["in_flight"] for m in models.values()):
                return name
        time.sleep(0.02)
    return None


def submit(url: str, seed: int) -> str:
    """POST /v1/jobs, retried while the router restarts or no pod is ready (a client would too)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            r = httpx.post(f"{url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "seed": seed, "steps": STEPS},
                           timeout=30)
            if r.status_code == 202:
                return r.json()["id"]
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "no 202 for two minutes"
        time.sleep(0.2)


def submit_paced(chaos: Chaos, count: int, restart_router_at: int | None = None) -> list[str]:
    """``count`` jobs, ten at a time every 1.2 s (about 8 a second, so kills land mid-run)."""
    ids: list[str] = []
    with ThreadPoolExecutor(8) as pool:
        for start in range(0, count, 10):
            ids += pool.map(lambda i: submit(chaos.url, i % SEEDS), range(start, min(count, start + 10)))
            time.sleep(1.2)
            if start == restart_router_at:  # the router too, once, mid-run
                assert chaos.router is not None
                chaos.router.kill()
                chaos.start_router()
    return ids


def wait_all(url: str, ids: list[str], timeout: float) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids):
        assert time.monotonic() < deadline, f"{len(ids) - len(done)} jobs unfinished"
        for job_id in ids:
            if job_id in done:
                continue
            try:
                job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
            except httpx.HTTPError:
                continue
            if job.get("status") in ("succeeded", "failed", "cancelled"):
                done[job_id] = job
        time.sleep(0.2)
    return done


def latencies(jobs: dict[str, dict]) -> list[float]:
    return sorted(j["finished_at"] - j["created_at"] for j in jobs.values())


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def test_three_hundred_jobs_survive_pod_kills_and_a_router_restart(tiny_model_dirs, tmp_path, redis_server):
    chaos = Chaos(tmp_path, tiny_model_dirs, redis_server.url)
    try:
        for name in chaos.ports:
            chaos.start_pod(name)
        for proc in chaos.pods.values():
            wait_until_ready(proc)
        chaos.start_router()

        # The seeds' images, and the latency without kills, from a calm run at the same pace first.
        calm = wait_all(chaos.url, submit_paced(chaos, BASELINE_JOBS), 120)
        reference: dict[int, bytes] = {}
        for job in calm.values():
            reference.setdefault(job["images"][0]["seed"], httpx.get(job["images"][0]["url"]).content)

        stop = threading.Event()

        def killer() -> None:
            rng = random.Random(7)
            while not stop.wait(KILL_EVERY):
                chaos.kill_and_replace(busy_pod(chaos) or rng.choice(sorted(chaos.pods)))

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        started = time.monotonic()
        ids = submit_paced(chaos, JOBS, restart_router_at=150)
        chaotic = wait_all(chaos.url, ids, 300)
        stop.set()
        thread.join()
        elapsed = time.monotonic() - started

        statuses = [j["status"] for j in chaotic.values()]
        lost = [j for j in chaotic.values() if j["status"] != "succeeded"]
        assert not lost, lost[:3]
        assert len(statuses) == JOBS and chaos.kills >= 3
        client = redis_server.client()
        redeliveries = 0
        for job_id, job in chaotic.items():
            image = job["images"][0]
            assert httpx.get(image["url"]).content == reference[image["seed"]]  # no key, the seed's bytes
            stored = sorted(p.name for p in (tmp_path / "results" / "jobs" / job_id).iterdir())
            assert stored == ["0.png", "0.png.meta", "job.json", "job.json.meta"]
            events = [fields[b"name"] for _, fields in client.xrange(f"tinyimg:events:{job_id}")]
            assert events.count(b"succeeded") == 1 and events[-1] == b"succeeded"
            redeliveries += max(0, int(client.hget(f"tinyimg:job:{job_id}", "attempts")) - 1)
        calm_l, chaos_l = latencies(calm), latencies(chaotic)
        figures = {
            "jobs": JOBS, "lost": len(lost), "kills": chaos.kills, "router_restarts": 1, "redeliveries": redeliveries,
            "seconds": round(elapsed, 1),
            "calm_p50": round(statistics.median(calm_l), 3), "calm_p95": round(quantile(calm_l, 0.95), 3),
            "chaos_p50": round(statistics.median(chaos_l), 3), "chaos_p95": round(quantile(chaos_l, 0.95), 3),
        }
        print("chaos figures:", json.dumps(figures))
        (tmp_path / "figures.json").write_text(json.dumps(figures))
        assert redeliveries >= 1  # the kills did land on running jobs, and those were taken again
    finally:
        chaos.stop()
