"""The peer for bench/vs_litserve.py: LitServe serving the same tiny diffusers pipeline with the same
batch limits, answering in this server's JSON shape (PNG, base64) so both do the same work.

Run by the benchmark in its own process with LitServe on the path (installed only for the benchmark,
see bench/vs_litserve.py). Each response carries where its time went, measured inside the worker.
"""

from __future__ import annotations

import argparse
import base64
import io
import time

import litserve as ls
import torch
from diffusers import DiffusionPipeline


class TinyPipelineAPI(ls.LitAPI):
    def __init__(self, source: str, max_batch_size: int, batch_timeout: float):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/generate")
        self.source = source

    def setup(self, device: str) -> None:
        self.pipe = DiffusionPipeline.from_pretrained(self.source, dtype=torch.float32).to(device)
        self.pipe.set_progress_bar_config(disable=True)

    def decode_request(self, request: dict) -> dict:
        request["received"] = time.perf_counter()
        return request

    def predict(self, batch: list[dict]) -> list[dict]:
        first = batch[0]
        start = time.perf_counter()
        with torch.inference_mode():
            images = self.pipe(
                [r["prompt"] for r in batch], width=first["width"], height=first["height"],
                num_inference_steps=first["steps"], guidance_scale=first["guidance_scale"],
                generator=[torch.Generator("cpu").manual_seed(r["seed"]) for r in batch],
            ).images
        inference = time.perf_counter() - start
        return [{"image": image, "seed": r["seed"], "queued": start - r["received"], "inference": inference,
                 "batch_size": len(batch)} for image, r in zip(images, batch, strict=True)]

    def encode_response(self, output: dict) -> dict:
        start = time.perf_counter()
        buffer = io.BytesIO()
        output["image"].save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        return {"images": [{"b64": encoded, "seed": output["seed"], "format": "png"}],
                "batch_size": output["batch_size"],
                "timings": {"queued_seconds": output["queued"], "inference_seconds": output["inference"],
                            "encode_seconds": time.perf_counter() - start}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--wait-ms", type=int, default=50)
    args = parser.parse_args()
    api = TinyPipelineAPI(args.source, args.max_batch, args.wait_ms / 1000)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=300)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)


if __name__ == "__main__":
    main()
