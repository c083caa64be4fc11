"""Batch selection from a plain list standing in for a device queue."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from tinyimg.families.base import GenerationParams, batch_key
from tinyimg.runtime.jobqueue import pick_batch, wait_for_company


@dataclass
class QueuedJob:
    name: str
    model: str
    params: GenerationParams


def job(name: str, model: str = "m", images: int = 1, size: int = 64, steps: int = 4) -> QueuedJob:
    params = GenerationParams(f"prompt {name}", None, size, size, steps, 5.0, tuple(range(images)))
    return QueuedJob(name, model, params)


def names(jobs) -> list[str]:
    return [j.name for j in jobs]


@pytest.mark.parametrize(
    ("queue", "max_images", "expected"),
    [
        pytest.param([], 4, [], id="empty-queue"),
        pytest.param([job("a")], 4, ["a"], id="single-job"),
        pytest.param([job("a"), job("b"), job("c")], 4, ["a", "b", "c"], id="compatible-jobs-join"),
        pytest.param([job("a"), job("b"), job("c")], 2, ["a", "b"], id="stops-at-max-images"),
        pytest.param([job("a", images=3), job("b", images=2), job("c")], 4, ["a", "c"],
                     id="skips-a-job-that-does-not-fit"),
        pytest.param([job("a"), job("b", model="other"), job("c")], 4, ["a", "c"], id="other-model-stays-queued"),
        pytest.param([job("a"), job("b", size=128), job("c", steps=8)], 4, ["a"], id="different-size-or-steps-stay"),
        pytest.param([job("a", images=6), job("b")], 4, ["a"], id="oversized-head-runs-alone-whole"),
        pytest.param([job("a", model="other"), job("b")], 4, ["a"], id="head-decides-the-model"),
    ],
)
def test_pick_batch(queue, max_images, expected):
    assert names(pick_batch(queue, max_images)) == expected


def test_pick_batch_leaves_the_queue_untouched():
    queue = [job("a"), job("b")]
    pick_batch(queue, 4)
    assert names(queue) == ["a", "b"]


# wait_for_company at now=10.0 (a 50 ms max wait: a client answered at 9.99 is expected until 10.04),
# batches of up to 8 images.
@pytest.mark.parametrize(
    ("images", "returning", "latest_start", "expected"),
    [
        pytest.param(1, [], 40.0, 0.0, id="lone-request-at-an-idle-device-runs-at-once"),
        pytest.param(3, [], 40.0, 0.0, id="what-queued-while-the-device-was-busy-runs-at-once"),
        pytest.param(1, [10.04] * 7, 40.0, 0.04, id="clients-just-answered-are-awaited-until-they-are-due"),
        pytest.param(1, [10.02, 10.04], 40.0, 0.04, id="awaited-until-the-last-one-is-due"),
        pytest.param(1, [10.0, 9.95], 40.0, 0.0, id="clients-past-due-are-no-longer-awaited"),
        pytest.param(8, [10.04] * 7, 40.0, 0.0, id="a-full-batch-never-waits"),
        pytest.param(9, [10.04], 40.0, 0.0, id="an-oversized-head-never-waits"),
        pytest.param(1, [10.04], 10.02, 0.02, id="never-past-the-heads-latest-start"),
        pytest.param(1, [10.04], 9.0, 0.0, id="a-head-past-its-latest-start-runs-now"),
    ],
)
def test_wait_for_company(images, returning, latest_start, expected):
    left = wait_for_company(10.0, images=images, max_images=8, latest_start=latest_start, returning=returning)
    assert left == pytest.approx(expected)


BASE = GenerationParams("a fox", None, 64, 64, 4, 5.0, (1,))


@pytest.mark.parametrize(
    ("other", "shares"),
    [
        pytest.param(replace(BASE, prompt="a cat", negative_prompt="blurry", seeds=(7, 8), request_id="r2"), True,
                     id="prompt-seeds-and-request-may-differ"),
        pytest.param(replace(BASE, mode="img2img", strength=0.5, image="img"), False, id="mode"),
        pytest.param(replace(BASE, width=128), False, id="width"),
        pytest.param(replace(BASE, height=128), False, id="height"),
        pytest.param(replace(BASE, steps=8), False, id="steps"),
        pytest.param(replace(BASE, guidance_scale=7.0), False, id="guidance"),
        pytest.param(replace(BASE, scheduler="ddim"), False, id="scheduler"),
        pytest.param(replace(BASE, loras=(("style", 1.0),)), False, id="adapters"),
    ],
)
def test_batch_key_against_a_text_to_image_request(other, shares):
    assert (batch_key(other) == batch_key(BASE)) is shares


IMG2IMG = replace(BASE, mode="img2img", strength=0.5, image="input a", loras=(("ink", 0.7), ("style", 1.0)))


@pytest.mark.parametrize(
    ("other", "shares"),
    [
        pytest.param(replace(IMG2IMG, image="input b", seeds=(3,)), True, id="each-keeps-its-own-input"),
        pytest.param(replace(IMG2IMG, strength=0.6), False, id="strength"),
        pytest.param(replace(IMG2IMG, loras=(("ink", 0.7), ("style", 0.9))), False, id="adapter-scale"),
        pytest.param(replace(IMG2IMG, loras=(("ink", 0.7),)), False, id="adapter-set"),
        pytest.param(replace(IMG2IMG, mode="inpaint", mask="m"), False, id="inpaint-vs-img2img"),
    ],
)
def test_batch_key_between_image_to_image_requests(other, shares):
    assert (batch_key(other) == batch_key(IMG2IMG)) is shares


def test_mixed_keys_leave_the_queue_as_singles_in_order():
    keys = [BASE, replace(BASE, scheduler="ddim"), replace(BASE, loras=(("style", 1.0),)), IMG2IMG]
    queue = [QueuedJob(str(i), "m", p) for i, p in enumerate(keys)]
    batches = []
    while queue:
        batch = pick_batch(queue, 4)
        batches.append(names(batch))
        queue = [j for j in queue if j not in batch]
    assert batches == [["0"], ["1"], ["2"], ["3"]]
