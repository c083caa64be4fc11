"""cache.preload on the emulated cluster: the chart's operator runs the loader Job (the emulator's
Job controller and kubelet run it as a real `tinyimg preload` process), status.cache reports what
it put in the shared volume, and the model's pod waits for it before loading."""

from __future__ import annotations

import httpx
import pytest

from tests.cluster.conftest import IMAGEMODELS, NAMESPACE, condition, imagemodel_manifest, install_chart, model_pods
from tests.support.tiny_models import tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.runtime.preload import measure_files
from tinyimg.spec import ModelSpec

MODEL = "preloaded"
CACHE = {"size": "1Gi", "accessMode": "ReadWriteMany", "preload": True}


@pytest.fixture(scope="module")
def installed(cluster):
    return install_chart(cluster)


def test_the_loader_job_fills_the_cache_before_the_model_loads(installed, tiny_model_dirs, tmp_path):
    cluster = installed
    manifest = tmp_path / "model.yaml"
    manifest.write_text(imagemodel_manifest("flux", tiny_model_dirs["flux"], name=MODEL, cache=CACHE))
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(manifest))
    body = cluster.wait_until(lambda: cluster.get(IMAGEMODELS, NAMESPACE, MODEL), timeout=30, what="the ImageModel")
    spec = ModelSpec.model_validate({"name": MODEL, **body["spec"]})

    def loaded() -> dict | None:
        cache = ((cluster.get(IMAGEMODELS, NAMESPACE, MODEL) or {}).get("status") or {}).get("cache") or {}
        return cache if cache.get("loaded") else None

    cache = cluster.wait_until(loaded, timeout=120, what="status.cache loaded")
    size, files = measure_files(tiny_model_dirs["flux"])
    assert (cache["loaded"], cache["bytes"], cache["files"], cache["revision"]) == (True, size, files, spec.weight_revision())

    job = cluster.get("batch/v1/jobs", NAMESPACE, f"{MODEL}-preload")
    assert condition(job, "Complete").get("status") == "True"
    [loader] = cluster.list("v1/pods", NAMESPACE, labels={"job-name": f"{MODEL}-preload"})
    assert loader["status"]["phase"] == "Succeeded"
    assert "tinyimg.io/model" not in loader["metadata"]["labels"]  # never mistaken for a model pod

    cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"imagemodel/{MODEL}", "--timeout=120s", timeout=150)
    [pod] = model_pods(cluster, MODEL)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["TINYIMG_PRELOAD_MARKER"] == "/var/cache/huggingface/tinyimg-preload"
    startup = httpx.get(f"http://{pod['status']['podIP']}:8000/status", timeout=10).json()["models"][MODEL]["startup"]
    assert startup["preload"] >= 0 and set(startup) >= {"preload", "load", "warmup"}
    cluster.kubectl("-n", NAMESPACE, "delete", "imagemodel", MODEL)
