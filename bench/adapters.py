"""Run-time LoRA adapters: what a request naming one costs, cold, from the disk cache and resident,
and what switching between two resident adapters costs per batch, in one run on this machine.

In process, on the real tiny pipelines (CPU) and the real code paths: ``AdapterLibrary.fetch``
against a file server on loopback (uvicorn serving the files), and the handler's
``hold_adapters`` (``load_lora_weights`` / ``delete_adapters``) plus the pipeline call.

- cold: fetch (download and SHA-256) + load into the pipeline;
- disk: fetch (a cache hit) + load (the adapter had been evicted from the pipeline);
- resident: fetch (cache hit) + hold (a hit: nothing loaded).
- per batch: the pipeline call with no adapter (baseline), the same adapter every batch, and two
  resident adapters alternating batch by batch (``set_adapters`` switches them).
- the fetch path's throughput on a 64 MiB file (hashing as it streams), for real adapter sizes.

    .venv/bin/python bench/adapters.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import OUT_DIR, build_table, describe_machine, ensure_tiny_model, progress


def make_lora(family: str, out: Path, seed: int) -> tuple[Path, str]:
    from tinyimg.make_tiny import TINY_LORA_WEIGHT_NAME, run_make_tiny_lora

    run_make_tiny_lora(family, out, seed=seed)
    path = out / TINY_LORA_WEIGHT_NAME
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.2f}"


def bench_family(family: str, rounds: int, tmp: Path) -> dict[str, object]:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from tinyimg.families import load_handler_class
    from tinyimg.families.base import AdapterFile, GenerationParams
    from tinyimg.runtime.adapters import AdapterLibrary
    from tinyimg.serve import BackgroundServer
    from tinyimg.spec import ModelSpec

    served = tmp / family / "served"
    served.mkdir(parents=True)
    hashes = []
    for seed in range(rounds + 2):  # a new adapter per cold round, and two to switch between
        path, sha = make_lora(family, tmp / family / f"lora-{seed}", 1000 + seed)
        path.rename(served / f"{seed}.safetensors")
        hashes.append(sha)
    server = BackgroundServer(Starlette(routes=[Mount("/", app=StaticFiles(directory=served))])).start()
    host = server.url.removeprefix("http://")
    spec = ModelSpec.model_validate({
        "name": f"tiny-{family}", "family": family, "source": str(ensure_tiny_model(family)),
        "runtime": {"device": "cpu", "maxResidentAdapters": 2}, "resources": {"gpus": 0}, "dtype": "float32",
        "adapterSources": {"allowedHosts": [host], "allowHttp": True},
    })
    handler = load_handler_class(family)(spec)
    handler.load("cpu")
    library = AdapterLibrary(tmp / family / "cache")
    loop = asyncio.new_event_loop()

    def fetch(i: int) -> tuple[AdapterFile, float]:
        started = time.perf_counter()
        file = loop.run_until_complete(library.fetch(spec, f"{server.url}/{i}.safetensors", hashes[i], "loras.0"))
        return file, time.perf_counter() - started

    def hold(file: AdapterFile) -> float:
        started = time.perf_counter()
        handler.hold_adapters((file,))
        return time.perf_counter() - started

    def call(file: AdapterFile | None) -> float:
        loras = ((file.name, 1.0),) if file else ()
        params = GenerationParams("a red cube", None, 64, 64, 4, handler.family.default_guidance, (1,),
                                  loras=loras, adapter_files=(file,) if file else ())
        started = time.perf_counter()
        handler.generate([params])
        return time.perf_counter() - started

    call(None)  # warm-up
    cold_fetch, cold_load, disk_fetch, disk_load, resident_fetch, resident_hold = [], [], [], [], [], []
    for i in range(rounds):
        progress(f"{family}: round {i + 1}/{rounds}")
        file, seconds = fetch(i)
        cold_fetch.append(seconds)
        cold_load.append(hold(file))
        call(file)
        handler.drop_adapters({file.name})  # evicted from the pipeline; its file stays on disk
        file, seconds = fetch(i)
        disk_fetch.append(seconds)
        disk_load.append(hold(file))
        file, seconds = fetch(i)
        resident_fetch.append(seconds)
        resident_hold.append(hold(file))
        handler.drop_adapters({file.name})
    a, _ = fetch(rounds)
    b, _ = fetch(rounds + 1)
    hold(a)
    hold(b)
    plain, same, alternating = [], [], []
    for i in range(rounds):
        plain.append(call(None))
        same.append(call(a))
        alternating.append(call(a if i % 2 else b))
    loop.run_until_complete(library.close())
    loop.close()
    server.stop()
    return {
        "family": family,
        "adapter_bytes": (served / "0.safetensors").stat().st_size,
        "cold": {"fetch": cold_fetch, "load": cold_load},
        "disk": {"fetch": disk_fetch, "load": disk_load},
        "resident": {"fetch": resident_fetch, "hold": resident_hold},
        "batch": {"none": plain, "same": same, "alternating": alternating},
        "events": dict(handler.adapter_events),
    }


def bench_fetch_throughput(tmp: Path, size: int = 64 << 20) -> dict[str, float]:
    """The fetch path alone on a large file: MB/s through httpx, SHA-256 and the disk."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from tinyimg.runtime.adapters import AdapterLibrary
    from tinyimg.serve import BackgroundServer
    from tinyimg.spec import ModelSpec

    served = tmp / "big"
    served.mkdir()
    blob = os.urandom(size)
    (served / "big.safetensors").write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    server = BackgroundServer(Starlette(routes=[Mount("/", app=StaticFiles(directory=served))])).start()
    spec = ModelSpec.model_validate({"name": "m", "family": "flux", "source": "/m", "adapterSources": {
        "allowedHosts": [server.url.removeprefix("http://")], "allowHttp": True}})
    seconds = []
    for round_ in range(3):
        async def once(library: AdapterLibrary) -> float:
            started = time.perf_counter()
            await library.fetch(spec, f"{server.url}/big.safetensors", sha, "loras.0")
            elapsed = time.perf_counter() - started
            await library.close()
            return elapsed

        seconds.append(asyncio.run(once(AdapterLibrary(tmp / f"big-cache-{round_}"))))
    server.stop()
    return {"bytes": size, "seconds": statistics.median(seconds), "mb_per_s": size / statistics.median(seconds) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    torch_threads = os.environ.get("OMP_NUM_THREADS")
    results: dict[str, object] = {"machine": describe_machine(), "rounds": args.rounds, "omp_threads": torch_threads}
    rows, batch_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("flux", "sdxl"):
            r = bench_family(family, args.rounds, Path(tmp))
            results[family] = r
            cold, disk, resident, batch = r["cold"], r["disk"], r["resident"], r["batch"]  # type: ignore[index]
            rows.append((family, f"{r['adapter_bytes']:,}",
                         f"{ms(cold['fetch'])} + {ms(cold['load'])}", f"{ms(disk['fetch'])} + {ms(disk['load'])}",
                         f"{ms(resident['fetch'])} + {ms(resident['hold'])}"))
            base = statistics.median(batch["none"])
            batch_rows.append((family, ms(batch["none"]),
                               f"{ms(batch['same'])} ({statistics.median(batch['same']) / base:.3f}x)",
                               f"{ms(batch['alternating'])} ({statistics.median(batch['alternating']) / base:.3f}x)",
                               f"{(statistics.median(batch['alternating']) - statistics.median(batch['same'])) * 1000:+.2f}"))
        throughput = bench_fetch_throughput(Path(tmp))
        results["fetch_throughput"] = throughput
    print(build_table(rows, ("family", "adapter bytes", "cold: fetch + load (ms)", "disk: fetch + load (ms)",
                             "resident: fetch + hold (ms)")))
    print()
    print(build_table(batch_rows, ("family", "no adapter (ms/batch)", "same adapter", "two alternating",
                                   "switch cost (ms)")))
    print()
    print(f"fetch path: {throughput['bytes'] >> 20} MiB in {throughput['seconds']:.3f} s = {throughput['mb_per_s']:.0f} MB/s")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "adapters-latest.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
