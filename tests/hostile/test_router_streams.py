"""Issue 17, event-stream flood: streams are bounded per job (and per client, and in all) on the
model server and the router, probes never share the bound, and a stream relayed by the router
closes its upstream as soon as its client leaves. Real `tinyimg serve` and `tinyimg router`."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import running_router, start_servers
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.http.streams import StreamLimits

LONG = {"limits": {"maxSteps": 1000}}
PER_JOB = StreamLimits().per_job


@pytest.fixture(scope="module")
def services(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streams")
    procs = start_servers({"pod": (("flux",), LONG)}, tiny_model_dirs, tmp)
    with running_router([f"--backend=tiny-flux={procs['pod'].url}"], tmp) as router:
        yield procs["pod"].url, router.url
    procs["pod"].stop()


@contextlib.contextmanager
def long_job(router: str):
    job = httpx.post(f"{router}/v1/jobs", json={"model": "tiny-flux", "prompt": "a kite", "steps": 1000, "width": 256, "height": 256}, timeout=30).json()
    try:
        yield job
    finally:
        httpx.delete(f"{router}/v1/jobs/{job['id']}", timeout=10)


def sse_clients(pod: str) -> float:
    text = httpx.get(f"{pod}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "tinyimg_sse_clients")


def within(seconds: float, check) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("through", ["pod", "router"])
def test_streams_on_one_job_are_bounded_and_probes_still_answer(services, through):
    pod, router = services
    with long_job(router) as job, httpx.Client(timeout=10) as client, contextlib.ExitStack() as stack:
        url = (f"{pod}/v1/jobs/{job['id'].split('.')[0]}" if through == "pod" else job["status_url"]) + "/events"
        opened = [stack.enter_context(client.stream("GET", url)) for _ in range(PER_JOB)]
        assert [r.status_code for r in opened] == [200] * PER_JOB
        refused = client.get(url)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_streams" and refused.headers["retry-after"]
        for service in (pod, router):
            assert client.get(f"{service}/health").status_code == 200
    # Closed streams give their places back.
    with long_job(router) as job, httpx.stream("GET", f"{job['status_url']}/events", timeout=10) as again:
        assert again.status_code == 200


def test_a_relayed_stream_closes_its_upstream_when_its_client_leaves(services):
    pod, router = services
    with long_job(router) as job:
        with httpx.stream("GET", f"{job['status_url']}/events", timeout=10) as events:
            assert events.status_code == 200, events.read()
            lines = events.iter_lines()  # kept: a dropped line iterator closes the response
            assert next(lines) == "retry: 2000"  # the stream is open end to end
            assert within(10, lambda: sse_clients(pod) == 1), sse_clients(pod)
        # The client left; the job runs on (1000 steps at 256², a minute), yet the pod's stream ends within moments.
        assert within(5, lambda: sse_clients(pod) == 0)
        assert httpx.get(job["status_url"], timeout=10).json()["status"] in ("queued", "running")
