"""Image-to-image at strength 0.5 vs text-to-image at the same steps, on the tiny demo pipelines
through the server's own handler (the same code path as a request).

diffusers skips the first (1 - strength) of the schedule in img2img, so at strength 0.5 it runs
half the denoising steps; it adds one VAE encode of the input. The figure: the median wall time of
one image, img2img / txt2img, interleaved runs; and the denoising steps each actually ran (counted
by the handler's per-step hook).

    .venv/bin/python bench/img2img.py [--runs 7] [--steps 16] [--size 128]
"""

from __future__ import annotations

import argparse
import time

from harness import build_table, ensure_tiny_model, median, progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from tinyimg.families import load_handler_class
    from tinyimg.families.base import GenerationParams
    from tinyimg.spec import ModelSpec

    rows = []
    for family in ("sdxl", "flux"):
        spec = ModelSpec(name=f"tiny-{family}", family=family, source=str(ensure_tiny_model(family)), dtype="float32",
                         runtime={"device": "cpu"}, resources={"gpus": 0})
        handler = load_handler_class(family)(spec)
        handler.load("cpu")
        guidance = handler.family.default_guidance
        size = args.size
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
        txt = GenerationParams("a lighthouse", None, size, size, args.steps, guidance, (1,))
        img = GenerationParams("a lighthouse", None, size, size, args.steps, guidance, (1,), mode="img2img",
                               strength=0.5, image=image)
        times: dict[str, list[float]] = {"txt2img": [], "img2img": []}
        steps: dict[str, int] = {}
        for params in (txt, img):  # warm-up (and builds the img2img pipeline once)
            handler.generate([params])
        for run in range(args.runs):
            for label, params in (("txt2img", txt), ("img2img", img)):
                counted: list[bool] = []
                start = time.perf_counter()
                handler.generate([params], lambda counted=counted: counted.append(True) and False)
                times[label].append(time.perf_counter() - start)
                steps[label] = len(counted)
            progress(f"{family} run {run + 1}/{args.runs}: txt2img {times['txt2img'][-1]:.3f}s, "
                     f"img2img {times['img2img'][-1]:.3f}s")
        t, i = median(times["txt2img"]), median(times["img2img"])
        rows.append((f"tiny {family}, {size}x{size}, {args.steps} steps", f"{t:.3f} s ({steps['txt2img']} steps)",
                     f"{i:.3f} s ({steps['img2img']} steps)", f"**{i / t:.2f}**"))
    print(build_table(rows, ("pipeline", "txt2img", "img2img, strength 0.5", "ratio")))


if __name__ == "__main__":
    main()
