"""The batch wait policies side by side on the real worker and queue, with a pipeline that sleeps.

The device worker and job queue are the server's own (tinyimg.runtime); the handler sleeps like a
pipeline call (``--call-ms`` + ``--image-ms`` per image) without using the CPU, and closed-loop
clients send their next request ``--think-ms`` after each answer. So the figures depend on the
policy, not on how busy the machine is. Policies, alternated each round:

- fixed: what the server did before, the head waits up to maxBatchWaitMs from its arrival;
- adaptive: ``wait_for_company`` (a batch waits only for recently answered clients still due).

    python bench/batch_wait_sim.py [--rounds 3] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from harness import build_table, progress, write_results

from tinyimg.families.base import GeneratedImage, GenerationParams
from tinyimg.runtime.jobqueue import CompanyGather, JobQueue, QueueSettings
from tinyimg.runtime.jobs import GenerationFailed, Job
from tinyimg.runtime.worker import DeviceWorker

LEVELS = (1, 4, 8, 16)


class SleepingHandler:
    def __init__(self, call_s: float, image_s: float):
        self.call_s, self.image_s, self.sizes = call_s, image_s, []

    def generate(self, batch: list[GenerationParams], should_stop: Any = None) -> list[list[GeneratedImage]]:
        images = sum(len(p.seeds) for p in batch)
        self.sizes.append(images)
        time.sleep(self.call_s + self.image_s * images)
        return [[GeneratedImage(None, seed) for seed in p.seeds] for p in batch]


class FixedWait(CompanyGather):
    """The wait before ``wait_for_company``: up to the model's max wait from the head's arrival, for anyone."""

    def wait_seconds(self, now: float, head: Job, pending: Sequence[Job], settings: QueueSettings, *,
                     free_since: float, returning: Sequence[float]) -> float:
        if sum(len(j.params.seeds) for j in self.pick(pending, settings)) >= settings.max_batch:
            return 0.0
        return max(0.0, min(head.enqueued_at + settings.max_wait, head.deadline) - now)


async def run_level(policy: str, clients: int, seconds: float, args: argparse.Namespace) -> dict[str, float]:
    queue = JobQueue({"m": QueueSettings(64, max_batch=8, max_wait=args.wait_ms / 1000)})
    handler = SleepingHandler(args.call_ms / 1000, args.image_ms / 1000)
    worker = DeviceWorker("cpu", queue, gather=FixedWait() if policy == "fixed" else CompanyGather())
    worker.handlers["m"] = handler
    worker.start()
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def client(c: int) -> None:
        loop = asyncio.get_running_loop()
        while time.monotonic() < stop_at:
            params = GenerationParams("p", None, 64, 64, 4, 0.0, (c,))
            job = Job("m", params, 60.0, loop.create_future())
            queue.submit(job)
            await job.future
            latencies.append(time.monotonic() - job.enqueued_at)
            await asyncio.sleep(args.think_ms / 1000)

    start = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.monotonic() - start
    await worker.stop(lambda job: GenerationFailed("stopped"), grace=5)
    return {"images_per_s": len(latencies) / wall, "p50_ms": statistics.median(latencies) * 1000,
            "mean_batch": statistics.mean(handler.sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per level, policy and round")
    parser.add_argument("--call-ms", type=float, default=40.0, help="fixed cost of one pipeline call")
    parser.add_argument("--image-ms", type=float, default=25.0, help="cost of each image in a call")
    parser.add_argument("--think-ms", type=float, default=5.0, help="answer to next request, per client")
    parser.add_argument("--wait-ms", type=float, default=50.0, help="maxBatchWaitMs")
    args = parser.parse_args()
    runs: dict[str, dict[int, list[dict[str, float]]]] = {p: {n: [] for n in LEVELS} for p in ("fixed", "adaptive")}
    for r in range(args.rounds):
        for n in LEVELS:
            for policy in (("fixed", "adaptive") if r % 2 == 0 else ("adaptive", "fixed")):
                runs[policy][n].append(asyncio.run(run_level(policy, n, args.seconds, args)))
        progress(f"round {r + 1}/{args.rounds} done")
    rows = []
    for n in LEVELS:
        cells = []
        for policy in ("fixed", "adaptive"):
            med = {k: statistics.median(run[k] for run in runs[policy][n]) for k in runs[policy][n][0]}
            cells.append(f"{med['images_per_s']:.1f} img/s, p50 {med['p50_ms']:.0f} ms, batch {med['mean_batch']:.1f}")
        ratio = (statistics.median(x["images_per_s"] for x in runs["adaptive"][n])
                 / statistics.median(x["images_per_s"] for x in runs["fixed"][n]))
        rows.append((f"{n} clients", *cells, f"{ratio:.2f}x"))
    print(build_table(rows, ("closed-loop clients", "fixed wait (before)", "adaptive wait", "images/s ratio")))
    progress(f"wrote {write_results({'batch_wait_sim': {'args': vars(args), 'runs': runs}})}")


if __name__ == "__main__":
    main()
