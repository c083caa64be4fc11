"""Operator latency against the emulated Kubernetes API (tests/support/kube/), in one process.

Measures the time from ImageModel creation until its ConfigMap, Service and Deployment exist:
for one ImageModel, and for 50 created at once. Each run uses a fresh emulator and operator;
the operator's own startup is not counted. Prints the median (and min/max) of several runs.

    .venv/bin/python tests/bench/operator_bench.py [--runs 5] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.imagemodels import build_imagemodel
from tests.support.kube import KopfOperator, running_kube

NAMESPACE = "bench"


def imagemodel(name: str) -> dict:
    return build_imagemodel(name, NAMESPACE, resources={"gpus": 1})


def children_exist(kube, name: str) -> bool:
    return all((
        kube.get("v1/configmaps", NAMESPACE, f"{name}-config"),
        kube.get("v1/services", NAMESPACE, name),
        kube.get("apps/v1/deployments", NAMESPACE, name),
    ))


async def one_run(count: int) -> float:
    async with running_kube() as kube:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["KUBECONFIG"] = str(kube.write_kubeconfig(Path(tmp) / "kubeconfig"))
            operator = KopfOperator("tinyimg_operator.handlers")
            await operator.start()
            try:
                names = [f"model-{i}" for i in range(count)]
                started = time.perf_counter()
                await asyncio.gather(*(kube.create(imagemodel(n)) for n in names))
                await kube.wait_for(lambda: all(children_exist(kube, n) for n in names), timeout=120, interval=0.005)
                return time.perf_counter() - started
            finally:
                await operator.stop()


async def main(runs: int, batch: int) -> None:
    logging.getLogger("kopf").setLevel(logging.ERROR)
    for label, count in (("1 ImageModel", 1), (f"{batch} ImageModels at once", batch)):
        times = [await one_run(count) for _ in range(runs)]
        print(
            f"{label}: median {statistics.median(times) * 1000:.0f} ms "
            f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}, {runs} runs)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.batch))  # kopf runs on its own loop: nothing of it is left in this one
