"""LoRA adapters at run time on a real `tinyimg serve` (the tiny Flux pipeline, CPU): named by URL
from a file server on loopback, or registered with POST /v1/adapters. The first request downloads
and loads an adapter, the next ones hit; its image is the one the same file gives declared in the
spec; with maxResidentAdapters 1, A -> B -> A gives A's image again and memory stays level over
50 swaps; a wrong hash or a host off the list is a 422 naming the field; an adapter that does not
load fails only the requests that name it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml
from safetensors.torch import save_file

from tests.support.adapters import make_lora, serving_files
from tests.support.processes import spawn, wait_until_ready
from tests.support.stores import S3_ENV, s3_server  # noqa: F401  (the fixture)
from tests.support.tiny_models import tiny_config, tiny_model_dirs  # noqa: F401  (the fixture)
from tinyimg.core.errors import InvalidField
from tinyimg.runtime.adapters import AdapterLibrary
from tinyimg.spec import ModelSpec

MODEL = "tiny-flux"


@pytest.fixture(scope="module")
def setup(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapters")
    a, b = make_lora(tmp / "a", seed=11), make_lora(tmp / "b", seed=12)
    served = tmp / "served"
    served.mkdir()
    shutil.copy(a.path, served / "a.safetensors")
    shutil.copy(b.path, served / "b.safetensors")
    import torch

    save_file({"not_a_lora.weight": torch.zeros(4)}, served / "junk.safetensors")
    with serving_files(served) as (files, base):
        config = tiny_config(tiny_model_dirs, ("flux",), runtime={"maxResidentAdapters": 1, "maxBatchSize": 1},
                             adapters=[{"name": "declared-a", "source": str(a.directory)}],
                             adapterSources={"allowedHosts": [base.removeprefix("http://")], "allowHttp": True})
        config.adapter_cache_dir = str(tmp / "adapter-cache")
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(config.to_wire()))
        server = wait_until_ready(spawn("adapters", ["serve", "--config", str(path)], tmp))
        try:
            yield {"server": server.url, "files": files, "base": base, "a": a, "b": b, "tmp": tmp}
        finally:
            server.stop()


def generate(url: str, loras: list[dict], seed: int = 7, **extra) -> httpx.Response:
    body = {"model": MODEL, "prompt": "a lighthouse", "seed": seed, "steps": 2, "loras": loras, **extra}
    return httpx.post(f"{url}/generate", json=body, timeout=60)


def image_of(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["images"][0]["b64"])


def by_url(setup, which: str, **extra) -> dict:
    return {"url": f"{setup['base']}/{which}.safetensors", "sha256": setup[which].sha256, **extra}


def metric(url: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in {"model": MODEL, **labels}.items())
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[-1])
    return 0.0


def resident(url: str) -> list[dict]:
    return httpx.get(f"{url}/status").json()["models"][MODEL]["resident_adapters"]


def test_the_first_request_downloads_and_loads_the_next_one_hits(setup):
    url = setup["server"]
    loads = metric(url, "tinyimg_adapter_loads_total")
    first = image_of(generate(url, [by_url(setup, "a", scale=1.0)]))
    assert setup["files"].gets["/a.safetensors"] == 1
    assert metric(url, "tinyimg_adapter_fetches_total", outcome="downloaded") == 1
    assert metric(url, "tinyimg_adapter_loads_total") == loads + 1
    hits = metric(url, "tinyimg_adapter_hits_total")
    answer = generate(url, [by_url(setup, "a", scale=1.0)])
    assert image_of(answer) == first
    assert setup["files"].gets["/a.safetensors"] == 1  # the disk cache answered
    assert metric(url, "tinyimg_adapter_hits_total") == hits + 1
    assert metric(url, "tinyimg_adapter_loads_total") == loads + 1
    assert answer.json()["parameters"]["loras"] == [{"name": None, **by_url(setup, "a"), "scale": 1.0}]
    assert [(r["sha256"], r["label"], r["devices"]) for r in resident(url)] == [
        (setup["a"].sha256, f"{setup['base']}/a.safetensors", ["cpu"])]


def test_an_adapter_by_url_makes_the_image_the_same_file_declared_makes(setup):
    url = setup["server"]
    declared = image_of(generate(url, [{"name": "declared-a", "scale": 1.0}], seed=21))
    fetched = image_of(generate(url, [by_url(setup, "a", scale=1.0)], seed=21))
    plain = image_of(generate(url, [], seed=21))
    assert declared == fetched != plain


def test_one_resident_adapter_a_then_b_then_a_gives_a_again_and_memory_stays_level(setup):
    url = setup["server"]
    a1 = image_of(generate(url, [by_url(setup, "a")], seed=5))
    evictions = metric(url, "tinyimg_adapter_evictions_total")
    b = image_of(generate(url, [by_url(setup, "b")], seed=5))
    a2 = image_of(generate(url, [by_url(setup, "a")], seed=5))
    assert a1 == a2 != b
    assert metric(url, "tinyimg_adapter_evictions_total") == evictions + 2
    assert len(resident(url)) == 1
    for _ in range(5):  # allocator warm-up
        image_of(generate(url, [by_url(setup, "b")]))
        image_of(generate(url, [by_url(setup, "a")]))
    before = httpx.get(f"{url}/status").json()["process"]["rss_bytes"]
    for _ in range(50):
        image_of(generate(url, [by_url(setup, "b")]))
        image_of(generate(url, [by_url(setup, "a")]))
    after = httpx.get(f"{url}/status").json()["process"]["rss_bytes"]
    # The pipeline's own parameter count is checked exactly in test_pipelines_lora; here the
    # process: 100 loads and deletes of a 9 KB adapter must not grow it by more than allocator noise.
    assert after - before < 24 * 2**20, f"RSS grew by {(after - before) / 2**20:.1f} MiB over 50 swaps"
    assert image_of(generate(url, [by_url(setup, "a")], seed=5)) == a1
    assert setup["files"].gets["/b.safetensors"] == 1


@pytest.mark.parametrize(
    ("lora", "field", "words"),
    [
        pytest.param({"sha256": "0" * 64}, "loras.0.sha256", "not " + "0" * 64, id="wrong-hash"),
        pytest.param({"url": "http://example.com/a.safetensors"}, "loras.0.url",
                     "'example.com' is not on this model's adapterSources.allowedHosts", id="host-off-list"),
        pytest.param({"url": "file:///etc/passwd"}, "loras.0.url", "scheme 'file'", id="file-scheme"),
        pytest.param({"sha256": None}, "loras.0", "url needs sha256", id="no-hash"),
    ],
)
def test_a_wrong_hash_or_a_host_off_the_list_is_a_422_naming_the_field(setup, lora, field, words):
    answer = generate(setup["server"], [{**by_url(setup, "a"), **lora}])
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["field"] == field and words in error["message"], error


def test_an_adapter_that_does_not_load_fails_only_the_requests_naming_it(setup):
    url = setup["server"]
    junk = {"url": f"{setup['base']}/junk.safetensors",
            "sha256": hashlib.sha256((setup["tmp"] / "served" / "junk.safetensors").read_bytes()).hexdigest()}
    for _ in range(2):  # the second fails at once, from the remembered failure
        answer = generate(url, [junk])
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == "loras" and "failed to load" in answer.json()["error"]["message"]
    assert metric(url, "tinyimg_adapter_failures_total") == 1
    image_of(generate(url, []))
    image_of(generate(url, [by_url(setup, "a")]))


def test_an_admin_registers_an_adapter_by_name_lists_it_and_deletes_it(setup):
    url = setup["server"]
    registration = {"model": MODEL, "name": "ink", "url": f"{setup['base']}/b.safetensors", "sha256": setup["b"].sha256,
                    "scale": 0.5}
    created = httpx.post(f"{url}/v1/adapters", json=registration)
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in ("name", "url", "sha256", "scale")} == {
        k: registration[k] for k in ("name", "url", "sha256", "scale")}
    named = image_of(generate(url, [{"name": "ink"}], seed=9))
    assert named == image_of(generate(url, [by_url(setup, "b", scale=0.5)], seed=9))
    listing = httpx.get(f"{url}/v1/adapters", params={"model": MODEL}).json()["models"][MODEL]
    assert [a["name"] for a in listing["declared"]] == ["declared-a"]
    assert [a["name"] for a in listing["registered"]] == ["ink"]
    assert [a["sha256"] for a in listing["resident"]] == [setup["b"].sha256]

    assert httpx.delete(f"{url}/v1/adapters/{MODEL}/ink").status_code == 200
    gone = generate(url, [{"name": "ink"}])
    assert gone.status_code == 422 and gone.json()["error"]["field"] == "loras.0.name"
    assert resident(url) == []
    again = httpx.delete(f"{url}/v1/adapters/{MODEL}/ink")
    assert (again.status_code, again.json()["error"]["code"]) == (404, "adapter_not_found")
    wrong = httpx.post(f"{url}/v1/adapters", json={**registration, "sha256": "1" * 64})
    assert (wrong.status_code, wrong.json()["error"]["field"]) == (422, "adapter.sha256")
    unknown = httpx.post(f"{url}/v1/adapters", json={**registration, "model": "nope"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")


def test_a_job_names_an_adapter_by_url_too(setup):
    url = setup["server"]
    body = {"model": MODEL, "prompt": "a lighthouse", "seed": 7, "steps": 2, "loras": [by_url(setup, "a", scale=1.0)]}
    created = httpx.post(f"{url}/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    job_url = f"{url}/v1/jobs/{created.json()['id']}"
    for _ in range(200):
        job = httpx.get(job_url).json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["status"] == "succeeded", job
    assert job["parameters"]["loras"][0]["url"] == f"{setup['base']}/a.safetensors"


def test_an_adapter_by_s3_url_is_fetched_from_the_bucket(s3_server, tmp_path, monkeypatch):
    """s3:// against moto's S3 server (no real S3 here): the jobs' endpoint, the AWS_* credentials."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    blob = b"adapter bytes in a bucket" * 1000
    assert httpx.put(f"{s3_server.endpoint}/loras").status_code == 200  # CreateBucket
    assert httpx.put(f"{s3_server.endpoint}/loras/team/a.safetensors", content=blob).status_code == 200
    spec = ModelSpec.model_validate({"name": "m", "family": "flux", "source": "/m",
                                     "adapterSources": {"allowedHosts": ["loras"]}})
    library = AdapterLibrary(tmp_path, {"endpoint": s3_server.endpoint, "region": "us-east-1"})

    async def scenario():
        try:
            file = await library.fetch(spec, "s3://loras/team/a.safetensors", hashlib.sha256(blob).hexdigest(), "loras.0")
            with pytest.raises(InvalidField) as missing:
                await library.fetch(spec, "s3://loras/team/none.safetensors", "0" * 64, "loras.1")
            return file, missing.value
        finally:
            await library.close()

    file, missing = asyncio.run(scenario())
    assert Path(file.path).read_bytes() == blob
    assert missing.field == "loras.1.url" and "could not be fetched" in missing.reason
