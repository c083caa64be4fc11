"""ImageModel latency on the emulated cluster (tests/support/cluster): the chart installed with real
helm, models applied with real kubectl, operator, router and model servers as real processes.

Measures, from `kubectl apply` of tiny Flux ImageModels: until every one is Ready (`kubectl wait`),
and until the first image of each came back through the router's Service. For 1 model, and for
N at once. The chart's install is not counted.

    .venv/bin/python tests/bench/cluster_bench.py [--count 10]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cluster.conftest import HELM_INSTALL, NAMESPACE, imagemodel_manifest
from tests.support.cluster.harness import running_cluster
from tinyimg.make_tiny import run_make_tiny_model


def router_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:  # no ready router pod behind the Service yet
        return False


def first_image(url: str, model: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            resp = httpx.post(f"{url}/generate", json={"model": model, "prompt": "x", "width": 64, "height": 64},
                              headers={"Accept": "image/png"}, timeout=60)
            if resp.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(model)


def one_run(count: int, tmp: Path, source: Path) -> tuple[float, float]:
    (tmp / f"cluster-{count}").mkdir()
    with running_cluster(tmp / f"cluster-{count}") as cluster:
        cluster.helm(*HELM_INSTALL)
        url = cluster.service_url(NAMESPACE, "tinyimg-router")
        cluster.wait_until(lambda: router_ready(url), timeout=60)
        names = [f"bench-{i}" for i in range(count)]
        manifest = tmp / f"models-{count}.yaml"
        manifest.write_text("---\n".join(imagemodel_manifest("flux", source, name=n) for n in names))
        started = time.monotonic()
        cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest))
        cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", *(f"imagemodel/{n}" for n in names),
                        "--timeout=600s", timeout=620)
        ready = time.monotonic() - started
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda n: first_image(url, n, started + 600), names))
        return ready, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        run_make_tiny_model("flux", tmp / "tiny-flux")
        for count in (1, args.count):
            ready, image = one_run(count, tmp, tmp / "tiny-flux")
            print(f"{count} tiny Flux ImageModel(s): apply -> Ready {ready:.1f} s, apply -> first image through the router {image:.1f} s")


if __name__ == "__main__":
    main()
