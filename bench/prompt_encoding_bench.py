"""Prompt encoding for a batch of 8 requests, as the server did it before (one text-encoder call and
one ``_execution_device`` walk per request) and as it does now (``Handler.encode_prompts``: one call
per batch, the execution device read once per pipeline). Interleaved, tiny SDXL and tiny Flux, CPU.

    python bench/prompt_encoding_bench.py [--batch 8] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from harness import ensure_tiny_model, progress, write_results

PROMPTS = ["a lighthouse on a cliff at dusk", "a red fox in the snow", "a bowl of ramen", "a kite over a beach"]


def encode_per_request(handler: Any, batch: list[Any]) -> None:
    """What the server did before: each request on its own, the device walked each time."""
    pipe = handler.pipe
    for params in batch:
        if handler.spec.family == "flux":
            pipe.encode_prompt(prompt=params.prompt, prompt_2=None, device=pipe._execution_device,
                               num_images_per_prompt=1, max_sequence_length=handler.max_sequence_length())
        else:
            pipe.encode_prompt(params.prompt, device=pipe._execution_device, num_images_per_prompt=1,
                               do_classifier_free_guidance=params.guidance_scale > 1.0,
                               negative_prompt=params.negative_prompt)


def load_handler(family: str) -> Any:
    from tinyimg.families import load_handler_class
    from tinyimg.spec import ModelSpec

    spec = ModelSpec.model_validate({"name": f"tiny-{family}", "family": family,
                                     "source": str(ensure_tiny_model(family)), "dtype": "float32"})
    handler = load_handler_class(family)(spec)
    handler.load("cpu")
    return handler


def bench_family(family: str, size: int, repeats: int) -> dict[str, float]:
    import torch

    from tinyimg.families.base import GenerationParams

    handler = load_handler(family)
    guidance = 5.0 if family == "sdxl" else 0.0
    batch = [GenerationParams(PROMPTS[i % len(PROMPTS)], None, 64, 64, 4, guidance, (i,)) for i in range(size)]
    times: dict[str, list[float]] = {"per_request": [], "batched": []}
    with torch.inference_mode():
        for _ in range(repeats):
            for name, fn in (("per_request", lambda: encode_per_request(handler, batch)),
                             ("batched", lambda: handler.encode_prompts(batch))):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        walk = []
        for _ in range(repeats):
            start = time.perf_counter()
            _ = handler.pipe._execution_device
            walk.append(time.perf_counter() - start)
    result = {f"{k}_ms": statistics.median(v) * 1000 for k, v in times.items()}
    result["execution_device_walk_ms"] = statistics.median(walk) * 1000
    progress(f"{family}: batch of {size}: per request {result['per_request_ms']:.1f} ms, "
             f"one call {result['batched_ms']:.1f} ms; one _execution_device walk {result['execution_device_walk_ms']:.3f} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    results = {family: bench_family(family, args.batch, args.repeats) for family in ("sdxl", "flux")}
    progress(f"wrote {write_results({'prompt_encoding': results})}")


if __name__ == "__main__":
    main()
