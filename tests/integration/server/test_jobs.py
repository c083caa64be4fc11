"""The jobs API over real HTTP (uvicorn on loopback) with the real tiny Flux pipeline, its
denoising steps paced to 50 ms (tests.support.faults.PacedFluxHandler) so queueing, progress and
cancellation can be watched."""

from __future__ import annotations

import base64
import io
import time

import httpx
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.support.faults import PacedFluxHandler
from tests.support.jobs_client import KEYS, auth, create, read, stream, wait_for

STEP = PacedFluxHandler.step_seconds


def status_of(url: str) -> dict:
    return httpx.get(f"{url}/status", timeout=10).json()["models"]["tiny-flux"]


def test_a_job_runs_from_queued_to_succeeded_with_every_step_and_one_terminal_event(jobs_live):
    r = create(jobs_live, steps=6, seed=5, num_images=2)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == job["status_url"] == f"{jobs_live}/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["total_steps"] == 6
    assert job["parameters"]["seed"] == 5 and job["parameters"]["num_images"] == 2
    events = stream(jobs_live, job["id"])
    names = [e.name for e in events]
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert names[0] == "queued" and events[0].data == {"position": 1}
    assert names.index("started") < names.index("progress")
    assert [e.data["step"] for e in events if e.name == "progress"] == [1, 2, 3, 4, 5, 6]
    elapsed = [e.data["elapsed_seconds"] for e in events if e.name == "progress"]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= 6 * STEP
    assert names[-1] == "succeeded" and sum(n in ("succeeded", "failed", "cancelled") for n in names) == 1
    assert events[-1].data == {"images": 2, "seeds": [5, 6]}

    done = read(jobs_live, job["id"])
    assert done["status"] == "succeeded" and done["step"] == done["total_steps"] == 6
    assert [i["seed"] for i in done["images"]] == [5, 6]
    assert done["timings"]["inference_seconds"] >= 6 * STEP and done["device"] == "cpu"
    image = httpx.get(done["images"][1]["url"], headers=auth(), timeout=10)
    assert image.headers["content-type"] == "image/png" and image.headers["x-seed"] == "6"
    assert Image.open(io.BytesIO(image.content)).size == (64, 64)


def test_queue_positions_move_as_earlier_jobs_finish(jobs_live):
    # Different step counts never share a batch: the three run one after another.
    first, second, third = (create(jobs_live, steps=s).json() for s in (8, 7, 6))
    events = stream(jobs_live, third["id"])
    positions = [e.data["position"] for e in events if e.name == "queued"]
    assert positions[-1] == 1 and positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions)
    assert positions[0] >= 2
    assert [e.name for e in events][len(positions)] == "started"
    started = {j["id"]: read(jobs_live, j["id"])["started_at"] for j in (first, second, third)}
    assert started[first["id"]] < started[second["id"]] < started[third["id"]]


def test_a_stream_resumes_after_last_event_id_and_hanging_up_does_not_cancel(jobs_live):
    job = create(jobs_live, steps=10).json()
    head = stream(jobs_live, job["id"], stop_after=4)  # hang up mid-way
    rest = stream(jobs_live, job["id"], last_event_id=head[-1].id)
    assert [e.id for e in head + rest] == list(range(1, len(head) + len(rest) + 1))
    assert rest[-1].name == "succeeded"
    assert read(jobs_live, job["id"])["status"] == "succeeded"
    assert stream(jobs_live, job["id"], last_event_id=rest[-1].id) == []  # nothing after the end


def test_a_quiet_stream_gets_keep_alive_comments(jobs_live):
    blocker = create(jobs_live, steps=20).json()
    waiting = create(jobs_live, steps=19).json()  # queued behind 20 steps: about a second of silence
    comments: list[str] = []
    events = stream(jobs_live, waiting["id"], comments=comments)
    assert ": keep-alive" in comments and events[-1].name == "succeeded"
    assert read(jobs_live, blocker["id"])["status"] == "succeeded"


def test_cancelling_a_queued_job_takes_it_out_of_the_queue_at_once(jobs_live):
    running = create(jobs_live, steps=20).json()
    queued = create(jobs_live, steps=19).json()
    wait_for(jobs_live, running["id"], lambda j: j["status"] == "running")
    assert read(jobs_live, queued["id"])["position"] == 1 and status_of(jobs_live)["queue_depth"] == 1
    r = httpx.delete(f"{jobs_live}/v1/jobs/{queued['id']}", headers=auth(), timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert status_of(jobs_live)["queue_depth"] == 0
    assert [e.name for e in stream(jobs_live, queued["id"])][-1] == "cancelled"
    assert wait_for(jobs_live, running["id"], lambda j: j["status"] != "running")["status"] == "succeeded"
    again = httpx.delete(f"{jobs_live}/v1/jobs/{queued['id']}", headers=auth(), timeout=10)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    finished = httpx.delete(f"{jobs_live}/v1/jobs/{running['id']}", headers=auth(), timeout=10)
    assert finished.status_code == 409 and finished.json()["error"]["code"] == "job_finished"


def test_cancelling_a_running_job_keeps_its_batch_mate_and_frees_the_worker(jobs_live):
    # A blocker holds the worker while both queue; same steps and size: the free worker takes them
    # as one batch.
    blocker = create(jobs_live, steps=10).json()
    mine, mate = create(jobs_live, steps=40, seed=1).json(), create(jobs_live, steps=40, seed=2).json()
    assert read(jobs_live, blocker["id"])["status"] in ("queued", "running")
    wait_for(jobs_live, mine["id"], lambda j: j["step"] >= 2)
    assert read(jobs_live, mate["id"])["status"] == "running"
    httpx.delete(f"{jobs_live}/v1/jobs/{mine['id']}", headers=auth(), timeout=10)
    cancelled = read(jobs_live, mine["id"])
    assert cancelled["status"] == "cancelled" and cancelled["images"] is None
    mate_done = wait_for(jobs_live, mate["id"], lambda j: j["status"] != "running", timeout=30)
    assert mate_done["status"] == "succeeded" and mate_done["batch_size"] == 2 and mate_done["step"] == 40

    alone = create(jobs_live, steps=60, prompt="alone").json()
    wait_for(jobs_live, alone["id"], lambda j: j["step"] >= 2)
    at_cancel = httpx.delete(f"{jobs_live}/v1/jobs/{alone['id']}", headers=auth(), timeout=10).json()["step"]
    while status_of(jobs_live)["in_flight"]:
        time.sleep(0.005)
    # The pipeline stops after the step it was in (its progress report may trail by one step),
    # instead of running the 55+ steps left.
    call = PacedFluxHandler.calls.index(["alone"])
    assert at_cancel <= PacedFluxHandler.steps_run[call] <= at_cancel + 2


@pytest.mark.parametrize(
    "path, code",
    [
        pytest.param("/v1/jobs/not-a-job", "job_not_found", id="malformed"),
        pytest.param("/v1/jobs/job_" + "0" * 32, "job_not_found", id="unknown"),
        pytest.param("/v1/jobs/job_" + "0" * 32 + "/events", "job_not_found", id="unknown-events"),
        pytest.param("/v1/jobs/%00%ff../../etc/passwd", "not_found", id="garbage"),
    ],
)
def test_unknown_or_malformed_job_ids_are_404_with_a_code(jobs_live, path, code):
    r = httpx.get(jobs_live + path, headers=auth(), timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == code


def test_a_job_is_read_only_with_the_key_that_created_it(jobs_live):
    job = create(jobs_live, key=KEYS[0], steps=2).json()
    assert httpx.get(job["status_url"], headers=auth(KEYS[1]), timeout=10).json()["error"]["code"] == "job_not_found"
    assert httpx.get(job["status_url"], timeout=10).status_code == 404
    assert httpx.delete(job["status_url"], headers=auth(KEYS[1]), timeout=10).status_code == 404
    assert httpx.post(f"{jobs_live}/v1/jobs", json={"model": "tiny-flux", "prompt": "x"}, timeout=10).status_code == 401
    assert read(jobs_live, job["id"], KEYS[0])["id"] == job["id"]


def test_bad_input_and_a_full_answer_are_refused_at_creation(jobs_live):
    r = create(jobs_live, steps=61)
    assert r.status_code == 422 and r.json()["error"]["field"] == "steps"
    r = create(jobs_live, model="nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_image_index_out_of_range_and_unfinished_jobs(jobs_live):
    job = create(jobs_live, steps=30).json()
    early = httpx.get(f"{job['status_url']}/images/0", headers=auth(), timeout=10)
    assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_succeeded"
    wait_for(jobs_live, job["id"], lambda j: j["status"] == "succeeded")
    late = httpx.get(f"{job['status_url']}/images/1", headers=auth(), timeout=10)
    assert late.status_code == 404 and late.json()["error"]["code"] == "image_not_found"


def test_generate_is_a_job_and_is_not_kept(jobs_live):
    r = httpx.post(f"{jobs_live}/generate", json={"model": "tiny-flux", "prompt": "x", "steps": 2},
                   headers=auth() | {"Accept": "image/png"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-job-id"].startswith("job_")
    gone = httpx.get(f"{jobs_live}/v1/jobs/{r.headers['x-job-id']}", headers=auth(), timeout=10)
    assert gone.json()["error"]["code"] == "job_not_found"


def test_openai_client_gets_urls_and_honours_the_seed(jobs_live):
    client = OpenAI(base_url=f"{jobs_live}/v1", api_key=KEYS[0])
    by_url = client.images.generate(model="tiny-flux", prompt="a kite", size="64x64", response_format="url",
                                    n=2, extra_body={"seed": 77})
    assert [d.url.rsplit("/", 1)[-1] for d in by_url.data] == ["0", "1"]
    assert by_url.data[0].url.startswith(f"{jobs_live}/v1/jobs/job_")
    first = httpx.get(by_url.data[0].url, headers=auth(), timeout=10).content
    by_b64 = client.images.generate(model="tiny-flux", prompt="a kite", size="64x64", response_format="b64_json",
                                    extra_body={"seed": 77})
    # The same seed, the same image: n=2 ran as one batch, n=1 alone, and batched kernels may round
    # differently, so the contract (README, "POST /generate") is every value within 2/255, not bytes.
    alone = np.asarray(Image.open(io.BytesIO(base64.b64decode(by_b64.data[0].b64_json))), dtype=int)
    batched = np.asarray(Image.open(io.BytesIO(first)), dtype=int)
    assert alone.shape == batched.shape == (64, 64, 3)
    assert np.abs(alone - batched).max() <= 2
    assert [m.id for m in client.models.list()] == ["tiny-flux"]


def test_metrics_count_jobs_by_state_open_streams_and_time_queued_vs_generating(jobs_live):
    def samples() -> dict[tuple, float]:
        text = httpx.get(f"{jobs_live}/metrics", timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    before = samples()
    job = create(jobs_live, steps=20).json()
    head = stream(jobs_live, job["id"], stop_after=1)  # a stream that stays open while we look
    assert head[0].name == "queued"
    with httpx.stream("GET", f"{job['status_url']}/events", headers=auth(), timeout=30) as open_stream:
        assert open_stream.status_code == 200
        during = samples()
        assert during[("tinyimg_sse_clients", ())] >= 1
        assert during[("tinyimg_jobs", (("state", "running"),))] + during[("tinyimg_jobs", (("state", "queued"),))] >= 1
    wait_for(jobs_live, job["id"], lambda j: j["status"] == "succeeded")
    after = samples()
    finished = ("tinyimg_jobs_finished_total", (("model", "tiny-flux"), ("state", "succeeded")))
    assert after[finished] == before.get(finished, 0) + 1
    generating = ("tinyimg_job_generating_seconds_count", (("model", "tiny-flux"),))
    assert after[generating] == before.get(generating, 0) + 1
    assert after[("tinyimg_job_generating_seconds_sum", (("model", "tiny-flux"),))] >= 20 * STEP
    assert after[("tinyimg_jobs", (("state", "succeeded"),))] >= 1
