"""Jobs through real `tinyimg router` processes in front of two real `tinyimg serve` processes:
ids resolve to the pod that holds the job from any router replica (no shared state), SSE passes
through as it happens, cancel works through the router, forged ids and other keys read as unknown,
and a job whose pod is gone says so."""

from __future__ import annotations

import base64
import io
import time
from contextlib import ExitStack

import httpx
import pytest
from PIL import Image

from tests.support.jobs_client import stream
from tests.support.processes import running_router, start_servers
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.router.jobids import build_pod_tag

KEYS = ("router-key-1", "router-key-2")
LONG = {"limits": {"maxSteps": 400}, "jobs": {"previewIntervalMs": 0}}


@pytest.fixture(scope="module")
def cluster(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("router-jobs")
    procs = start_servers({"pod-a": (("flux",), LONG), "pod-b": (("flux",), LONG)}, tiny_model_dirs, tmp)
    (tmp / "secret").write_text("a shared router job secret, 32+ bytes\n")
    (tmp / "keys").write_text("\n".join(KEYS) + "\n")
    common = ["--job-secret-file", str(tmp / "secret"), "--api-keys-file", str(tmp / "keys")]
    both = [f"--backend=tiny-flux={p.url}" for p in procs.values()]
    with ExitStack() as stack:
        routers = [stack.enter_context(running_router([*both, *common], tmp, f"router-{i}")) for i in (1, 2)]
        only_a = stack.enter_context(running_router([f"--backend=tiny-flux={procs['pod-a'].url}", *common], tmp, "router-a"))
        yield procs, routers, only_a
    for proc in procs.values():
        proc.stop()


def auth(key: str = KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(router_url: str, **body) -> dict:
    r = httpx.post(f"{router_url}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", **body},
                   headers=auth(), timeout=30)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == r.json()["status_url"]
    return r.json()


def pod_of(procs, job: dict) -> str:
    """Which pod holds the job, asked of the pods themselves (the router id starts with the pod's)."""
    pod_job = job["id"].split(".")[0]
    holders = [name for name, p in procs.items() if httpx.get(f"{p.url}/v1/jobs/{pod_job}").status_code == 200]
    assert len(holders) == 1
    return holders[0]


def test_jobs_resolve_to_their_pod_from_any_router_replica(cluster):
    procs, (first, second), _ = cluster
    jobs = [create(first.url, steps=3, seed=40 + i) for i in range(4)]
    holders = {pod_of(procs, job) for job in jobs}
    assert holders == {"pod-a", "pod-b"}  # the balancer spread them: ids must find either pod
    for job in jobs:
        assert job["status_url"].startswith(f"{first.url}/v1/jobs/{job['id']}")
        events = stream(second.url, job["id"], key=KEYS[0])
        assert events[-1].name == "succeeded"
        done = httpx.get(f"{second.url}/v1/jobs/{job['id']}", headers=auth(), timeout=10).json()
        assert done["id"] == job["id"] and done["status"] == "succeeded"
        assert done["images"][0]["url"] == f"{second.url}/v1/jobs/{job['id']}/images/0"
        image = httpx.get(done["images"][0]["url"], headers=auth(), timeout=10)
        assert image.headers["content-type"] == "image/png" and image.headers["x-seed"] == str(done["images"][0]["seed"])
        assert Image.open(io.BytesIO(image.content)).size == (64, 64)


def test_sse_passes_through_the_router_as_it_happens(cluster):
    _, (first, _), _ = cluster
    job = create(first.url, steps=12)
    events = stream(first.url, job["id"], key=KEYS[0])
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.data["step"] for e in events if e.name == "progress"][-1] == 12
    assert events[-1].name == "succeeded"
    resumed = stream(first.url, job["id"], key=KEYS[0], last_event_id=events[-3].id)
    assert [e.id for e in resumed] == [e.id for e in events[-2:]]


def test_preview_events_pass_through_the_router(cluster):
    _, (first, _), _ = cluster
    job = create(first.url, steps=6, width=256, height=128, preview=True)
    events = stream(first.url, job["id"], key=KEYS[0])
    previews = [e for e in events if e.name == "preview"]
    # Interval 0: one after each step but the last (a stream that falls behind skips superseded ones).
    steps = [e.data["step"] for e in previews]
    assert steps and steps == sorted(set(steps)) and steps[-1] <= 5 and events[-1].name == "succeeded"
    url = previews[0].data["images"][0]
    assert url.startswith("data:image/jpeg;base64,") and (previews[0].data["width"], previews[0].data["height"]) == (128, 64)
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (128, 64)


def test_the_router_serves_the_playground_without_a_key(cluster):
    _, (first, _), _ = cluster
    page = httpx.get(f"{first.url}/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'fetch("v1/jobs/"' in page.text  # relative: it calls the router it was loaded from


def test_openai_urls_through_the_router_are_the_routers(cluster):
    from openai import OpenAI

    _, (first, second), _ = cluster
    client = OpenAI(base_url=f"{first.url}/v1", api_key=KEYS[0])
    answer = client.images.generate(model="tiny-flux", prompt="a kite", size="64x64", response_format="url",
                                    extra_body={"seed": 5})
    url = answer.data[0].url
    assert url.startswith(f"{first.url}/v1/jobs/") and url.endswith("/images/0")
    image = httpx.get(url.replace(first.url, second.url), headers=auth(), timeout=10)
    assert image.status_code == 200 and image.headers["x-seed"] == "5"
    assert [m.id for m in client.models.list()] == ["tiny-flux"]


def test_cancel_through_the_router(cluster):
    _, (first, second), _ = cluster
    job = create(first.url, steps=400)
    r = httpx.delete(f"{second.url}/v1/jobs/{job['id']}", headers=auth(), timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["id"] == job["id"]
    assert stream(first.url, job["id"], key=KEYS[0])[-1].name == "cancelled"


def test_forged_ids_and_other_keys_read_as_unknown(cluster):
    procs, (first, _), _ = cluster
    job = create(first.url, steps=2)
    pod_job, _, mac = job["id"].split(".")
    (other,) = [p.url for name, p in procs.items() if name != pod_of(procs, job)]
    # The other pod's real tag (as if the attacker knew it) with this id's signature: refused.
    forged = f"{pod_job}.{build_pod_tag(b'a shared router job secret, 32+ bytes', other)}.{mac}"
    for job_id, key in ((forged, KEYS[0]), (job["id"], KEYS[1]), (pod_job, KEYS[0]), ("nonsense", KEYS[0])):
        r = httpx.get(f"{first.url}/v1/jobs/{job_id}", headers=auth(key), timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found", (job_id, key)
    assert httpx.get(f"{first.url}/v1/jobs/{job['id']}", timeout=10).status_code == 401


def test_a_job_whose_pod_is_gone_says_so(cluster):
    procs, (first, _), only_a = cluster
    # The balancer weighs load and measured latency: pod-a may win several creations in a row
    # while it looks faster. Long jobs make its backlog grow until pod-b gets one (bounded).
    jobs: list[dict] = []
    deadline = time.monotonic() + 30
    while not (on_b := [j for j in jobs if pod_of(procs, j) == "pod-b"]) and time.monotonic() < deadline:
        jobs.append(create(first.url, steps=100))
        time.sleep(0.05)
    for job in jobs:
        if job not in on_b:
            httpx.delete(f"{first.url}/v1/jobs/{job['id']}", headers=auth(), timeout=10)
    assert on_b, f"the balancer put none of {len(jobs)} jobs on pod-b in 30 s"
    # A router that does not know pod-b (it left the table): the id is valid, the pod is gone.
    r = httpx.get(f"{only_a.url}/v1/jobs/{on_b[0]['id']}", headers=auth(), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_pod_gone"
    procs["pod-b"].kill()
    r = httpx.get(f"{first.url}/v1/jobs/{on_b[0]['id']}", headers=auth(), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_pod_gone"
