"""Out of memory degrades: a batch that runs out of GPU memory is retried in halves (by images, so a
request of several images may be split too), then an image alone with VAE tiling; only an image
that still runs out fails, and with it its request (500 ``out_of_memory``). The other requests of
the batch are answered. Runs on the device's thread, so no other batch takes the device between
tries; the cache is released before each retry.

``generate_within_memory`` is pure policy: the pipeline call, the out-of-memory test and the
release are given (tests give a fake pipeline that fails above a batch size).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import replace

from tinyimg.families.base import GeneratedImage, GenerationParams

log = logging.getLogger("tinyimg.engine")

# (requests, tiled) -> per request its images, in seed order: one pipeline call.
PipelineCall = Callable[[list[GenerationParams], bool], list[list[GeneratedImage]]]
Unit = tuple[int, int]  # (request index in the batch, seed)


class OutOfMemory(Exception):
    """An image that ran out of memory alone and tiled: its request fails."""


def group_units(batch: list[GenerationParams], units: list[Unit]) -> tuple[list[GenerationParams], list[int]]:
    """``units`` (in batch order) as requests: each request of the batch that has units here, with
    only those seeds; and the batch index of each."""
    order: list[int] = []
    seeds: dict[int, list[int]] = {}
    for index, seed in units:
        if index not in seeds:
            order.append(index)
        seeds.setdefault(index, []).append(seed)
    return [replace(batch[i], seeds=tuple(seeds[i])) for i in order], order


def generate_within_memory(
    batch: list[GenerationParams],
    call: PipelineCall,
    is_out_of_memory: Callable[[BaseException], bool],
    release: Callable[[], None],
) -> list[list[GeneratedImage] | OutOfMemory]:
    """Per request of ``batch``: its images, or ``OutOfMemory`` when one of them could not be made.
    Any other error propagates (the worker's own retry rules apply)."""
    made: dict[Unit, GeneratedImage] = {}
    failed: set[int] = set()

    everything = [(i, seed) for i, p in enumerate(batch) for seed in p.seeds]

    def attempt(units: list[Unit], tiled: bool) -> None:
        # The first try is the batch as it came (no copies on every batch's way).
        requests, indices = (batch, list(range(len(batch)))) if units is everything else group_units(batch, units)
        try:
            answers = call(requests, tiled)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            traceback.clear_frames(err.__traceback__)  # the failed call's activations, before releasing
            del err
            release()
            if len(units) > 1:
                half = len(units) // 2
                log.warning("out of memory; retrying the batch in halves",
                            extra={"images": len(units), "request_ids": [r.request_id for r in requests]})
                attempt(units[:half], False)
                attempt(units[half:], False)
            elif not tiled:
                log.warning("out of memory on one image; retrying with VAE tiling",
                            extra={"request_ids": [r.request_id for r in requests]})
                attempt(units, True)
            else:
                failed.update(indices)
            return
        for index, images in zip(indices, answers, strict=True):
            for image in images:
                made[(index, image.seed)] = image

    attempt(everything, False)
    results: list[list[GeneratedImage] | OutOfMemory] = []
    for i, p in enumerate(batch):
        if i in failed:
            results.append(OutOfMemory(f"request {p.request_id}: an image ran out of memory alone with VAE tiling"))
        else:
            results.append([made[(i, seed)] for seed in p.seeds])
    return results
