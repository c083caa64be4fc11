"""Opt-in ``preview`` events over real HTTP (uvicorn on loopback), from the real tiny Flux pipeline
with its steps paced to 50 ms and ``previewIntervalMs: 0`` (tests.support.jobs_client): the
previews are decoded with the map the model fitted from its own VAE at load."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tests.support.jobs_client import Event, create, read, stream

TERMINAL = ("succeeded", "failed", "cancelled")


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix):], validate=True)))
    assert image.format == "JPEG"
    image.load()
    return image


def previews_of(events: list[Event]) -> list[Event]:
    return [e for e in events if e.name == "preview"]


def test_a_job_asking_for_previews_streams_jpeg_previews_before_its_images(jobs_live):
    job = create(jobs_live, steps=8, seed=3, num_images=2, width=256, height=192, preview=True).json()
    assert job["preview"] is True  # the job says what it asked for
    events = stream(jobs_live, job["id"])
    names = [e.name for e in events]
    previews = previews_of(events)
    assert names[-1] == "succeeded" and sum(n in TERMINAL for n in names) == 1
    assert len(previews) >= 3  # interval 0: one after every step but the last
    assert events[names.index("started")].id < previews[0].id
    steps = [p.data["step"] for p in previews]
    assert steps == sorted(set(steps)) and steps[-1] < 8 and all(p.data["total_steps"] == 8 for p in previews)
    for preview in previews:
        # Each preview follows its step's progress event.
        progress = next(e for e in events if e.name == "progress" and e.data["step"] == preview.data["step"])
        assert progress.id < preview.id
        assert (preview.data["width"], preview.data["height"]) == (128, 96)  # 256x192 scaled to 128 on the long side
        images = [decode_data_url(url) for url in preview.data["images"]]
        assert len(images) == 2 and all(i.size == (128, 96) and i.mode == "RGB" for i in images)
    # Not a blank picture: the map turns the latents into colours that vary over the image.
    last = np.asarray(decode_data_url(previews[-1].data["images"][0]), dtype=np.float32)
    assert last.std() > 1.0
    done = read(jobs_live, job["id"])
    assert done["status"] == "succeeded" and len(done["images"]) == 2
    # Once finished the previews are dropped (the images are there): a late stream skips them.
    replay = stream(jobs_live, job["id"])
    assert previews_of(replay) == [] and replay[-1].name == "succeeded"


def test_small_images_get_previews_of_their_own_size_and_a_job_without_the_flag_gets_none(jobs_live):
    with_previews = create(jobs_live, steps=5, width=64, height=48, preview=True).json()
    without = create(jobs_live, steps=5, width=64, height=48).json()
    assert (with_previews["preview"], without["preview"]) == (True, False)
    events = stream(jobs_live, with_previews["id"])
    assert previews_of(events) and all((p.data["width"], p.data["height"]) == (64, 48) for p in previews_of(events))
    assert decode_data_url(previews_of(events)[0].data["images"][0]).size == (64, 48)
    plain = stream(jobs_live, without["id"])
    assert plain[-1].name == "succeeded" and previews_of(plain) == []
    assert [e.data["step"] for e in plain if e.name == "progress"] == [1, 2, 3, 4, 5]


def test_in_a_batch_only_the_job_that_asked_gets_previews(jobs_live):
    # A blocker holds the worker while both queue; same steps and size: they run as one batch.
    blocker = create(jobs_live, steps=10).json()
    wanted = create(jobs_live, steps=6, seed=1, num_images=2, preview=True).json()
    plain = create(jobs_live, steps=6, seed=2).json()
    wanted_events, plain_events = stream(jobs_live, wanted["id"]), stream(jobs_live, plain["id"])
    assert read(jobs_live, wanted["id"])["batch_size"] == read(jobs_live, plain["id"])["batch_size"] == 3
    assert previews_of(plain_events) == [] and plain_events[-1].name == "succeeded"
    previews = previews_of(wanted_events)
    assert previews and all(len(p.data["images"]) == 2 for p in previews)
    assert wanted_events[-1].name == "succeeded"
    assert read(jobs_live, blocker["id"])["status"] == "succeeded"


def test_preview_must_be_a_boolean(jobs_live):
    r = create(jobs_live, steps=2, preview="sometimes")
    assert r.status_code == 422 and r.json()["error"]["field"] == "preview"
