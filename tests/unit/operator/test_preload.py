"""cache.preload's operator side: the loader Job (valid Kubernetes, not a model pod), the pods'
marker directory, and status.cache from the Job and its pod (pure)."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from tinyimg.spec import ModelSpec
from tinyimg_operator.deployment import build_canary_deployment, build_deployment
from tinyimg_operator.preload import build_cache_status, build_preload_job
from tinyimg_operator.settings import BuildSettings

PRELOADED = {"size": "100Gi", "accessMode": "ReadWriteMany", "preload": True}


def spec(**cache) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "family": "flux", "source": "black-forest-labs/FLUX.1-schnell",
                                     "hfTokenSecret": {"name": "hf"}, "cache": cache or PRELOADED})


def env_of(deployment: dict) -> dict:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("version", ["1.25", kubernetes_validate.utils.latest_version()])
def test_the_loader_job_is_valid_kubernetes(version):
    owner = {"metadata": {"name": "m", "uid": "0d4c1a2e-0000-4000-8000-000000000000"}}
    job = build_preload_job(spec(), "ns", BuildSettings(), owner)
    assert kubernetes_validate.validate(job, version, strict=True) in (version, version.rsplit(".", 1)[0])


def test_the_loader_runs_tinyimg_preload_on_the_models_config_and_cache_and_is_no_model_pod():
    model = spec()
    job = build_preload_job(model, "ns", BuildSettings())
    assert job["metadata"]["name"] == "m-preload"
    assert job["metadata"]["labels"]["tinyimg.io/revision"] == model.weight_revision()
    pod = job["spec"]["template"]
    assert "tinyimg.io/model" not in pod["metadata"]["labels"]  # no Service, status or autoscaler takes it
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["tinyimg", "preload", "--config", "/etc/tinyimg/config.yaml", "--model", "m",
                                    "--termination-log", "/dev/termination-log"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in container["env"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["cache"] == {"name": "cache", "persistentVolumeClaim": {"claimName": "m-cache"}}
    assert volumes["config"]["configMap"]["name"] == "m-config"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_without_preload_there_is_no_job_and_no_marker_to_wait_for():
    plain = spec(size="100Gi", accessMode="ReadWriteMany")
    assert build_preload_job(plain, "ns", BuildSettings()) is None
    assert "TINYIMG_PRELOAD_MARKER" not in env_of(build_deployment(plain, "ns", BuildSettings()))


def test_model_pods_wait_for_the_marker_but_a_canary_on_its_empty_dir_does_not():
    assert env_of(build_deployment(spec(), "ns", BuildSettings()))["TINYIMG_PRELOAD_MARKER"] == \
        "/var/cache/huggingface/tinyimg-preload"
    assert "TINYIMG_PRELOAD_MARKER" not in env_of(build_canary_deployment(spec(), "ns", BuildSettings()))


def job(*conditions: str, revision: str = "abc") -> dict:
    return {"metadata": {"name": "m-preload", "labels": {"tinyimg.io/revision": revision}},
            "status": {"conditions": [{"type": c, "status": "True", "message": "BackoffLimitExceeded"} for c in conditions]}}


def pod(code: int, message: str) -> dict:
    return {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": code, "message": message}}}]}}


def test_cache_status_follows_the_job():
    done = json.dumps({"revision": "abc", "bytes": 123456, "files": 7})
    assert build_cache_status(None, []) is None
    assert build_cache_status(job(), []) == {"loaded": False, "revision": "abc", "message": "the preload Job is filling the cache"}
    assert build_cache_status(job("Complete"), [pod(0, done)]) == {
        "loaded": True, "bytes": 123456, "files": 7, "revision": "abc", "message": None}
    failed = build_cache_status(job("Failed"), [pod(1, "tinyimg preload: m: OSError: no space left on device")])
    assert failed["loaded"] is False
    assert failed["message"] == "the preload Job failed: tinyimg preload: m: OSError: no space left on device"
