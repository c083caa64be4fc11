"""The out-of-memory policy (tinyimg.runtime.oom), pure: a fake pipeline that runs out of memory
above a number of images (and, for some prompts, unless it decodes in tiles)."""

from __future__ import annotations

import pytest

from tinyimg.families.base import GeneratedImage, GenerationParams
from tinyimg.runtime.oom import OutOfMemory, generate_within_memory, group_units


class FakeOutOfMemory(Exception):
    pass


class FakePipeline:
    def __init__(self, fits: int, needs_tiling: frozenset[str] = frozenset(), never: frozenset[str] = frozenset()):
        self.fits, self.needs_tiling, self.never = fits, needs_tiling, never
        self.calls: list[tuple[list[tuple[str, tuple[int, ...]]], bool]] = []
        self.released = 0

    def __call__(self, requests: list[GenerationParams], tiled: bool) -> list[list[GeneratedImage]]:
        self.calls.append(([(r.prompt, r.seeds) for r in requests], tiled))
        images = sum(len(r.seeds) for r in requests)
        prompts = {r.prompt for r in requests}
        if images > self.fits or prompts & self.never or (prompts & self.needs_tiling and not tiled):
            raise FakeOutOfMemory("out of memory")
        return [[GeneratedImage(f"{r.prompt}-{seed}", seed) for seed in r.seeds] for r in requests]

    def release(self) -> None:
        self.released += 1


def request(prompt: str, *seeds: int) -> GenerationParams:
    return GenerationParams(prompt, None, 64, 64, 2, 0.0, seeds, request_id=prompt)


def run(pipe: FakePipeline, batch: list[GenerationParams]):
    return generate_within_memory(batch, pipe, lambda err: isinstance(err, FakeOutOfMemory), pipe.release)


def images_of(result) -> list[str]:
    return [g.image for g in result]


def test_a_batch_that_fits_runs_once():
    pipe = FakePipeline(fits=4)
    results = run(pipe, [request("a", 1), request("b", 2, 3)])
    assert [images_of(r) for r in results] == [["a-1"], ["b-2", "b-3"]]
    assert len(pipe.calls) == 1 and pipe.released == 0


def test_four_requests_where_two_images_fit_are_answered_in_halves():
    pipe = FakePipeline(fits=2)
    results = run(pipe, [request(p, i) for i, p in enumerate("abcd")])
    assert [images_of(r) for r in results] == [["a-0"], ["b-1"], ["c-2"], ["d-3"]]
    assert [[p for p, _ in call] for call, _ in pipe.calls] == [["a", "b", "c", "d"], ["a", "b"], ["c", "d"]]
    assert pipe.released == 1


def test_one_request_of_four_images_is_split_by_images_and_reassembled_in_seed_order():
    pipe = FakePipeline(fits=1)
    [result] = run(pipe, [request("a", 10, 11, 12, 13)])
    assert images_of(result) == ["a-10", "a-11", "a-12", "a-13"]
    assert [call for call, _ in pipe.calls] == [
        [("a", (10, 11, 12, 13))], [("a", (10, 11))], [("a", (10,))], [("a", (11,))], [("a", (12, 13))],
        [("a", (12,))], [("a", (13,))]]
    assert pipe.released == 3


def test_an_image_that_fits_only_tiled_is_retried_with_tiling():
    pipe = FakePipeline(fits=4, needs_tiling=frozenset({"big"}))
    results = run(pipe, [request("big", 1), request("small", 2)])
    assert [images_of(r) for r in results] == [["big-1"], ["small-2"]]
    assert pipe.calls[-3:] == [([("big", (1,))], False), ([("big", (1,))], True), ([("small", (2,))], False)]


def test_only_the_request_whose_image_fails_alone_and_tiled_fails():
    pipe = FakePipeline(fits=4, never=frozenset({"huge"}))
    results = run(pipe, [request("ok", 1), request("huge", 2, 3), request("fine", 4)])
    assert images_of(results[0]) == ["ok-1"] and images_of(results[2]) == ["fine-4"]
    assert isinstance(results[1], OutOfMemory) and "huge" in str(results[1])


def test_other_errors_are_not_retried():
    def broken(requests, tiled):
        raise ValueError("a prompt the tokenizer rejects")

    with pytest.raises(ValueError):
        generate_within_memory([request("a", 1), request("b", 2)], broken, lambda err: False, lambda: None)


def test_group_units_keeps_batch_order_and_each_requests_seeds():
    batch = [request("a", 1, 2), request("b", 3), request("c", 4, 5)]
    requests, indices = group_units(batch, [(0, 2), (2, 4), (2, 5)])
    assert [(r.prompt, r.seeds) for r in requests] == [("a", (2,)), ("c", (4, 5))]
    assert indices == [0, 2]
