"""Adapter affinity and /v1/adapters through a real router to two real `tinyimg serve` processes
(tiny Flux, CPU), adapters served by a file server on loopback: once a pod holds adapter X, 20
sequential requests naming X all go to it (no second download or load anywhere); under load they
spread to the other pod, which then loads X too. A registration through the router reaches both
pods; a deletion leaves neither with it."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from tests.support.adapters import make_lora, serving_files
from tests.support.processes import running_router, spawn, wait_until_ready
from tests.support.tiny_models import tiny_config, tiny_model_dirs  # noqa: F401  (the fixture)

MODEL = "tiny-flux"


@pytest.fixture(scope="module")
def stack(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("router-adapters")
    lora = make_lora(tmp / "x", seed=41)
    (tmp / "served").mkdir()
    shutil.copy(lora.path, tmp / "served" / "x.safetensors")
    with serving_files(tmp / "served") as (files, base):
        pods = {}
        for name in ("pod-a", "pod-b"):
            config = tiny_config(tiny_model_dirs, ("flux",), runtime={"maxBatchSize": 1},
                                 adapterSources={"allowedHosts": [base.removeprefix("http://")], "allowHttp": True})
            config.adapter_cache_dir = str(tmp / f"{name}-cache")  # each pod its own disk
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config.to_wire()))
            pods[name] = spawn(name, ["serve", "--config", str(tmp / f"{name}.yaml")], tmp)
        try:
            for pod in pods.values():
                wait_until_ready(pod)
            args = [f"--backend={MODEL}={p.url}" for p in pods.values()]
            with running_router(args, tmp) as router:
                yield {"router": router.url, "pods": pods, "files": files,
                       "x": {"url": f"{base}/x.safetensors", "sha256": lora.sha256}}
        finally:
            for pod in pods.values():
                pod.stop()


def events(pod_url: str) -> dict:
    model = httpx.get(f"{pod_url}/status").json()["models"][MODEL]
    return {**model["adapter_events"], "served": model["served"]}


def generate(url: str, lora: dict, seed: int = 1) -> int:
    body = {"model": MODEL, "prompt": "a kite", "seed": seed, "steps": 2, "loras": [lora]}
    return httpx.post(f"{url}/generate", json=body, timeout=120).status_code


def test_requests_naming_an_adapter_go_to_the_pod_holding_it_until_it_is_loaded_then_spread(stack):
    router, pods = stack["router"], stack["pods"]
    assert generate(router, stack["x"]) == 200
    holder = next(name for name, pod in pods.items() if events(pod.url)["loads"] == 1)
    other = next(name for name in pods if name != holder)
    before = {name: events(pod.url) for name, pod in pods.items()}

    assert all(generate(router, stack["x"], seed=i) == 200 for i in range(20))
    after = {name: events(pod.url) for name, pod in pods.items()}
    assert after[holder]["hits"] - before[holder]["hits"] == 20
    assert after[holder]["served"] - before[holder]["served"] == 20
    assert after[other] == before[other]  # nothing went to the pod without X
    assert stack["files"].gets["/x.safetensors"] == 1

    with ThreadPoolExecutor(8) as pool:  # 8 at once: the holder's queue passes the affinity bound
        statuses = list(pool.map(lambda i: generate(router, stack["x"], seed=100 + i), range(48)))
    assert statuses == [200] * 48
    loaded = {name: events(pod.url) for name, pod in pods.items()}
    assert loaded[other]["served"] - after[other]["served"] > 0, loaded
    assert loaded[other]["loads"] == 1  # it loaded X once and then held it


def test_a_registration_through_the_router_reaches_every_pod_and_a_deletion_leaves_none(stack):
    router, pods = stack["router"], stack["pods"]
    registration = {"model": MODEL, "name": "kite-style", **stack["x"], "scale": 0.7}
    created = httpx.post(f"{router}/v1/adapters", json=registration)
    assert created.status_code == 201, created.text
    for pod in pods.values():
        listed = httpx.get(f"{pod.url}/v1/adapters").json()["models"][MODEL]["registered"]
        assert [(a["name"], a["scale"]) for a in listed] == [("kite-style", 0.7)]
    merged = httpx.get(f"{router}/v1/adapters", params={"model": MODEL}).json()["models"][MODEL]
    assert [a["name"] for a in merged["registered"]] == ["kite-style"]
    held_on = {device.rsplit("/", 1)[0] for a in merged["resident"] for device in a["devices"]}
    assert held_on == {p.url for p in pods.values()}  # static backends are named by their URL
    assert generate(router, {"name": "kite-style"}) == 200

    bad = httpx.post(f"{router}/v1/adapters", json={**registration, "sha256": "2" * 64})
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "adapter.sha256")
    off = httpx.post(f"{router}/v1/adapters", json={**registration, "url": "https://elsewhere.example/x.safetensors"})
    assert (off.status_code, off.json()["error"]["field"]) == (422, "adapter.url")
    shape = httpx.post(f"{router}/v1/adapters", json={"model": MODEL, "name": "x"})
    assert (shape.status_code, shape.json()["error"]["field"]) == (422, "url")

    assert httpx.delete(f"{router}/v1/adapters/{MODEL}/kite-style").status_code == 200
    for pod in pods.values():
        assert httpx.get(f"{pod.url}/v1/adapters").json()["models"][MODEL]["registered"] == []
    gone = httpx.delete(f"{router}/v1/adapters/{MODEL}/kite-style")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "adapter_not_found")
    unknown = httpx.delete(f"{router}/v1/adapters/nope/kite-style")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")
