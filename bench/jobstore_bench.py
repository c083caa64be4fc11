"""The job store's cost per call with many finished jobs kept (issue 17: eviction re-sorted every
finished job on each lookup, creation, finish and scrape). Pure Python, no server:

    .venv/bin/python bench/jobstore_bench.py [--jobs 100000]
"""

from __future__ import annotations

import argparse
import time

from tinyimg.core.jobs import new_job_id
from tinyimg.families.base import GenerationParams
from tinyimg.runtime.jobstore import JobRecord, JobStore

# What a job asked (its images are made up here; only the store's bookkeeping is tested).
PARAMS = GenerationParams("p", None, 64, 64, 2, 0.0, (1,))


def build_store(jobs: int) -> tuple[JobStore, list[str]]:
    """A store holding ``jobs`` finished jobs within their TTL and the byte bound (built through
    ``add`` and ``finish``, as the service does)."""
    store = JobStore(ttl_seconds=3600, max_bytes=10**12)
    ids = []
    for n in range(jobs):
        record = JobRecord(new_job_id(), "m", params=PARAMS, output_format="png")
        store.add(record)
        record.status, record.images = "succeeded", [b"x"]
        store.finish(record)
        ids.append(record.id)
        if n and n % 25_000 == 0:
            print(f"  built {n:,} jobs", flush=True)
    return store, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    started = time.perf_counter()
    store, ids = build_store(args.jobs)
    print(f"{args.jobs:,} jobs added and finished in {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    for job_id in ids[:1000]:
        store.get(job_id)
    print(f"get(): {(time.perf_counter() - started) / 1000 * 1e3:.4f} ms per call")
    started = time.perf_counter()
    for _ in range(100):
        store.result_bytes()
    print(f"result_bytes() (each /metrics scrape): {(time.perf_counter() - started) / 100 * 1e3:.4f} ms per call")


if __name__ == "__main__":
    main()
