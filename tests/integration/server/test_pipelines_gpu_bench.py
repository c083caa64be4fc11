"""bench/gpu_bench.py end to end in --tiny --device cpu mode: the code path the GPU run takes
(build the pipeline, time the bare call, serve it through create_app + uvicorn, write the JSON)."""

from __future__ import annotations

import json

from tests.support.gpu_bench import load_gpu_bench


def test_tiny_cpu_run_times_bare_and_server_and_writes_json(tmp_path):
    path = load_gpu_bench().main(["--tiny", "--device", "cpu", "--families", "flux", "--batches", "1,2",
                           "--runs", "1", "--warmup", "0", "--out", str(tmp_path)])
    report = json.loads(path.read_text())
    cases = [(r["family"], r["mode"], r["batch"], r["path"]) for r in report["rows"]]
    assert cases == [("flux", "eager", 1, "bare"), ("flux", "eager", 1, "server"),
                     ("flux", "eager", 2, "bare"), ("flux", "eager", 2, "server")]
    assert all(r["median_seconds"] > 0 for r in report["rows"])
    assert "| flux | eager | 2 |" in report["table"]
