"""Webhooks of jobs created through a real `tinyimg router` in front of two real `tinyimg serve`
processes: the body the pod POSTs carries the router id the client got and the router's URLs
(which work, through the router), signed; job headers a client sends are dropped by the router."""

from __future__ import annotations

import base64
import json
from contextlib import ExitStack

import httpx
import pytest
import yaml

from tests.support.jobs_client import WEBHOOK_HOSTS, WEBHOOK_SECRET
from tests.support.processes import running_router, spawn, wait_until_ready
from tests.support.tiny_models import tiny_config, tiny_model_dirs  # noqa: F401  (the fixture)
from tests.support.webhooks import running_receiver, verify
from tinyimg.core.auth import hash_key
from tinyimg.router.jobids import read_router_job_id
from tinyimg.spec import JobsConfig

KEY = "router-hooks-key"
ROUTER_SECRET = b"a shared router job secret, 32+ bytes"


@pytest.fixture(scope="module")
def cluster(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("router-hooks")
    (tmp / "hook-secret").write_text("whsec_" + base64.b64encode(WEBHOOK_SECRET).decode() + "\n")
    (tmp / "secret").write_text(ROUTER_SECRET.decode() + "\n")
    procs = {}
    for name in ("pod-a", "pod-b"):
        config = tiny_config(tiny_model_dirs, ("flux",))
        config.jobs = JobsConfig.model_validate({
            "webhookAllowedHosts": WEBHOOK_HOSTS, "webhookSecretFile": str(tmp / "hook-secret"),
        })
        # As the operator sets them up: the router's job secret, so only its signed headers count.
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump({**config.to_wire(), "routerSecretFile": str(tmp / "secret")}))
        procs[name] = spawn(name, ["serve", "--config", str(tmp / f"{name}.yaml")], tmp)
    (tmp / "keys").write_text(KEY + "\n")
    with ExitStack() as stack:
        for proc in procs.values():
            stack.callback(proc.stop)
        for proc in procs.values():
            wait_until_ready(proc)
        args = [*(f"--backend=tiny-flux={p.url}" for p in procs.values()),
                "--job-secret-file", str(tmp / "secret"), "--api-keys-file", str(tmp / "keys")]
        router = stack.enter_context(running_router(args, tmp, "router"))
        yield procs, router


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def pod_url_of(router_job_id: str, pod_urls: list[str]) -> str | None:
    """Which pod the id names (its tag is a keyed hash of the pod URL: only the secret tells)."""
    return read_router_job_id(ROUTER_SECRET, router_job_id, hash_key(KEY), pod_urls)[1]


def create_with_webhook(router_url: str, hook_url: str, headers: dict[str, str] | None = None, **body) -> dict:
    r = httpx.post(f"{router_url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 2,
                                                   "webhook": hook_url, **body},
                   headers={**auth(), **(headers or {})}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()


def test_a_webhook_of_a_job_made_through_the_router_carries_the_router_id_and_working_router_urls(cluster):
    procs, router = cluster
    with running_receiver() as (hooks, hook_url):
        jobs = [create_with_webhook(router.url, hook_url, seed=60 + i) for i in range(2)]
        hooks.wait_for_calls(2)
    bodies = {}
    for _, headers, body in hooks.calls:
        assert verify(headers, body)
        payload = json.loads(body)
        bodies[payload["id"]] = payload
        assert headers["webhook-id"] == f"msg_{payload['id'].split('.')[0]}"  # the pod's part of the id
    assert set(bodies) == {j["id"] for j in jobs}  # exactly the ids the client was given
    for job in jobs:
        payload = bodies[job["id"]]
        assert pod_url_of(job["id"], [p.url for p in procs.values()]) in {p.url for p in procs.values()}
        assert payload["status"] == "succeeded" and payload["status_url"] == job["status_url"]
        assert payload["status_url"] == f"{router.url}/v1/jobs/{job['id']}"
        assert payload["events_url"] == f"{router.url}/v1/jobs/{job['id']}/events"
        assert not any(p.url in json.dumps(payload) for p in procs.values())  # no pod address in it
        read = httpx.get(payload["status_url"], headers=auth(), timeout=10)
        assert read.status_code == 200 and read.json()["id"] == job["id"] and read.json()["status"] == "succeeded"
        image = httpx.get(payload["images"][0]["url"], headers=auth(), timeout=10)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.headers["x-seed"] == str(payload["images"][0]["seed"])


def test_job_headers_a_client_sends_are_dropped_by_the_router(cluster):
    procs, router = cluster
    injected_job = "job_" + "e" * 32
    injected = {"x-tinyimg-job-id": injected_job, "x-tinyimg-public-job-id": f"{injected_job}.ZXZpbA.bWFj",
                "x-tinyimg-public-base-url": "http://evil.example"}
    with running_receiver() as (hooks, hook_url):
        job = create_with_webhook(router.url, hook_url, injected)
        hooks.wait_for_calls(1)
    (_, headers, body), = hooks.calls
    payload = json.loads(body)
    assert verify(headers, body)
    assert job["id"].split(".")[0] != injected_job and payload["id"] == job["id"]
    assert payload["status_url"] == f"{router.url}/v1/jobs/{job['id']}" and "evil" not in body.decode()
    for proc in procs.values():  # no pod made a job under the injected id
        assert httpx.get(f"{proc.url}/v1/jobs/{injected_job}", timeout=10).status_code == 404


def test_job_headers_sent_straight_to_a_pod_that_has_the_routers_secret_are_ignored(cluster):
    """Sent directly to a pod, the router's headers once made validly signed webhook bodies with
    any job id and URLs. Unsigned, the pod now makes a job of its own (its id, its URLs)."""
    procs, _ = cluster
    pod = procs["pod-a"]
    forged_job = "job_" + "f" * 32
    forged = {"x-tinyimg-job-id": forged_job, "x-tinyimg-public-job-id": "job_x.forged.id",
              "x-tinyimg-public-base-url": "http://evil.example/", "x-tinyimg-job-signature": "0" * 64}
    with running_receiver() as (hooks, hook_url):
        r = httpx.post(f"{pod.url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 2, "webhook": hook_url},
                       headers=forged, timeout=30)
        assert r.status_code == 202, r.text
        hooks.wait_for_calls(1)
    (_, headers, body), = hooks.calls
    payload = json.loads(body)
    assert verify(headers, body)
    assert payload["id"] == r.json()["id"] != forged_job and "evil" not in body.decode()
    assert payload["status_url"].startswith(pod.url)
