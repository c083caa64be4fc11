"""What provenance costs: each step on one 1024x1024 image (the watermark, the parameters and
AI-generated mark in the file, the audit record's hashing) beside plain encoding, in this process;
then a tiny-model request at 256x256 through two `tinyimg serve` processes, one with the model's
whole provenance set on (parameters, watermark) and one with none, called in turn.

The content check is timed on a ViT-Base classifier with random weights (the size of common
NSFW classifiers), per 1024² image and per tiny-model batch.

Target (issue 24): the whole provenance set adds at most 5% to a tiny-model request.

Run: .venv/bin/python bench/provenance.py [--rounds N] [--requests N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import yaml
from harness import OUT_DIR, build_config, build_table, ensure_tiny_model, free_port, progress, wait_http
from PIL import Image, ImageFilter

from tinyimg import imaging
from tinyimg.provenance.audit import build_audit_record
from tinyimg.provenance.manifest import SigningKey, load_signing_key, sign_image
from tinyimg.provenance.metadata import build_xmp, dump_parameters
from tinyimg.provenance.watermark import build_payload, embed
from tinyimg.safety.checkers import ClassifierChecker
from tinyimg.safety.policy import blur
from tinyimg.spec import SafetySpec

TARGET_RATIO = 1.05
PARAMETERS = {"model": "tiny-sdxl", "revision": "abc", "seed": 1, "steps": 30, "width": 1024, "height": 1024,
              "guidance_scale": 5.0, "scheduler": None, "loras": []}


def photo_like(side: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((side, side, 3)) * 255).astype("uint8")).filter(ImageFilter.GaussianBlur(3))


def median_ms(fn: Any, rounds: int) -> float:
    fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def build_vit_base_checker() -> ClassifierChecker:
    """The content check at a real classifier's size (ViT-Base/16 at 224², 86M parameters, the
    architecture of common NSFW classifiers) with random weights: no download, real cost."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    checker = ClassifierChecker(SafetySpec(checker="classifier", source="in-memory"))
    config = ViTConfig(id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1})
    checker.model, checker.processor = ViTForImageClassification(config).eval(), ViTImageProcessor()
    checker.flagged, checker.device = [1], "cpu"
    return checker


def measure_checks(rounds: int) -> dict[str, float]:
    """The content check and the blur, per 1024² image and per tiny-model batch (4 images, 64²)."""
    checker = build_vit_base_checker()
    large, batch = photo_like(1024), [photo_like(64) for _ in range(4)]
    return {
        "check_vit_base_1024": median_ms(lambda: checker.score([large]), rounds),
        "check_vit_base_tiny_batch_of_4": median_ms(lambda: checker.score(batch), rounds),
        "blur_1024": median_ms(lambda: blur(large), rounds),
    }


def measure_steps(rounds: int, signing: SigningKey | None = None) -> dict[str, float]:
    image = photo_like(1024)
    payload = build_payload("bench")
    text, xmp = dump_parameters(PARAMETERS), build_xmp(PARAMETERS, "tinyimg bench")
    png = imaging.encode_image(image, "png")
    signed = {"c2pa_sign_png": median_ms(lambda: sign_image(png, "image/png", signing, "tinyimg bench"), rounds)} if signing else {}
    return {
        **signed,
        "encode_png": median_ms(lambda: imaging.encode_image(image, "png"), rounds),
        "encode_jpeg": median_ms(lambda: imaging.encode_image(image, "jpeg"), rounds),
        "watermark": median_ms(lambda: embed(image, payload), rounds),
        "parameters_png": median_ms(lambda: imaging.encode_image(image, "png", text, xmp), rounds)
        - median_ms(lambda: imaging.encode_image(image, "png"), rounds),
        "audit_record": median_ms(lambda: build_audit_record(
            job_id="j", status="succeeded", model="m", revision="r", tenant="t", key_hash=None, parameters=PARAMETERS,
            images=[png], seeds=[1]), rounds),
    }


def measure_requests(requests: int, threads: int, cert: str | None = None, key: str | None = None) -> dict[str, float]:
    """``cert``/``key``: the "on" server signs C2PA manifests too."""
    source = ensure_tiny_model("flux")
    processes, urls = [], {}
    try:
        everything = {"parameters": True, "watermark": True, **({"c2pa": True} if cert and key else {})}
        for label, provenance in (("off", {}), ("on", everything)):
            config = build_config("tiny-flux", "flux", source, max_batch=1, wait_ms=0)
            config["models"][0]["defaults"].update({"width": 256, "height": 256})
            config["models"][0]["provenance"] = provenance
            if provenance.get("c2pa"):
                config.update({"c2paCertFile": cert, "c2paKeyFile": key})
            path = OUT_DIR / f"provenance-{label}.yaml"
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config))
            port = free_port()
            log = OUT_DIR / f"provenance-{label}.log"
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tinyimg", "serve", "--config", str(path), "--port", str(port), "--log-level", "warning"],
                stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=OUT_DIR, env={**os.environ, "OMP_NUM_THREADS": str(threads)}))
            urls[label] = f"http://127.0.0.1:{port}"
            wait_http(f"{urls[label]}/health/ready", 300, processes[-1], log)
        samples: dict[str, list[float]] = {label: [] for label in urls}
        body = {"model": "tiny-flux", "prompt": "a benchmark", "seed": 1}
        with httpx.Client(timeout=120) as client:
            for url in urls.values():
                client.post(f"{url}/generate", json=body).raise_for_status()
            for index in range(requests):
                for label in (list(urls) if index % 2 else list(urls)[::-1]):
                    started = time.perf_counter()
                    client.post(f"{urls[label]}/generate", json=body, headers={"Accept": "image/png"}).raise_for_status()
                    samples[label].append(time.perf_counter() - started)
                if (index + 1) % max(1, requests // 5) == 0:
                    progress(f"requests: {index + 1}/{requests}")
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
    return {label: statistics.median(s) * 1000 for label, s in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="repetitions of each per-image step")
    parser.add_argument("--requests", type=int, default=40, help="requests to each server")
    parser.add_argument("--c2pa-cert", help="a PEM certificate chain: also time C2PA signing (with --c2pa-key)")
    parser.add_argument("--c2pa-key", help="its PEM private key")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server (OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    signing = load_signing_key(args.c2pa_cert, args.c2pa_key) if args.c2pa_cert and args.c2pa_key else None
    steps = {**measure_steps(args.rounds, signing), **measure_checks(args.rounds)}
    progress("per-image steps measured")
    requests = measure_requests(args.requests, args.threads, args.c2pa_cert, args.c2pa_key)
    results = {"steps_ms_1024": steps, "request_p50_ms": requests, "ratio": requests["on"] / requests["off"]}
    (OUT_DIR / "provenance-latest.json").write_text(json.dumps(results, indent=2))
    print(build_table([(name, f"{ms:.2f}") for name, ms in steps.items()], ("step on one 1024² image", "ms")))
    print(build_table([(label, f"{ms:.2f}") for label, ms in requests.items()], ("provenance", "tiny request p50 (ms)")))
    print(f"on / off: {results['ratio']:.3f} (target <= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
