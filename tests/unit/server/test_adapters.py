"""Adapters by URL (tinyimg.runtime.adapters): which URLs a model accepts (each refusal a 422
naming the field), and the library's fetch against a real HTTP server on loopback: one download
for many requests, the hash checked before the file is kept, size bounds, the disk cache's LRU."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest

from tests.support.adapters import serving_files
from tinyimg.core.errors import InvalidField
from tinyimg.runtime.adapters import (
    AdapterLibrary,
    build_adapter_name,
    check_adapter_url,
    evict_cache,
)
from tinyimg.spec import AdapterSourcesSpec, ModelSpec
from tinyimg.wire.requests import LoraRequest

SOURCES = AdapterSourcesSpec(allowed_hosts=["loras.example.com", "huggingface.co", "my-bucket", "mirror.svc:8080"])


@pytest.mark.parametrize(
    ("url", "field_words"),
    [
        pytest.param("https://evil.example.com/a.safetensors", "'evil.example.com' is not on", id="host-off-list"),
        pytest.param("http://loras.example.com/a.safetensors", "scheme 'http' is not one of https, hf, s3", id="http-off"),
        pytest.param("ftp://loras.example.com/a", "scheme 'ftp'", id="ftp"),
        pytest.param("loras.example.com/a", "scheme '(none)'", id="no-scheme"),
        pytest.param("https://user:pw@loras.example.com/a", "credentials", id="credentials"),
        pytest.param("https://loras.example.com/a b", "whitespace", id="space"),
        pytest.param("https://loras.example.com:99999/a", "not a valid URL", id="bad-port"),
        pytest.param("https://mirror.svc/a", "'mirror.svc' is not on", id="port-must-match"),
        pytest.param("hf://org/only-repo", "expected hf://", id="hf-no-path"),
        pytest.param("s3://my-bucket/", "expected s3://", id="s3-no-key"),
        pytest.param("s3://other-bucket/a", "'other-bucket' is not on", id="s3-bucket-off-list"),
    ],
)
def test_a_url_off_the_rules_is_a_422_naming_the_field(url, field_words):
    with pytest.raises(InvalidField) as caught:
        check_adapter_url(url, SOURCES, "loras.0.url")
    assert caught.value.field == "loras.0.url" and field_words in caught.value.reason


def test_no_allowed_hosts_means_adapters_by_url_are_off():
    with pytest.raises(InvalidField, match="adapters by URL are off"):
        check_adapter_url("https://loras.example.com/a", AdapterSourcesSpec(), "loras.1.url")


def test_accepted_urls_say_where_to_fetch(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    https = check_adapter_url("https://LORAS.example.com:443/x/a.safetensors?sig=1", SOURCES, "f")
    assert (https.scheme, https.host, https.fetch_url) == ("https", "loras.example.com:443", "https://LORAS.example.com:443/x/a.safetensors?sig=1")
    hub = check_adapter_url("hf://org/repo@v1.0/loras/style.safetensors", SOURCES, "f")
    assert hub.fetch_url == "https://huggingface.co/org/repo/resolve/v1.0/loras/style.safetensors"
    assert hub.headers == {"authorization": "Bearer hf_secret"}
    assert check_adapter_url("hf://org/repo/a.safetensors", SOURCES, "f").fetch_url.endswith("/resolve/main/a.safetensors")
    s3 = check_adapter_url("s3://my-bucket/team/a.safetensors", SOURCES, "f")
    assert (s3.bucket, s3.key) == ("my-bucket", "team/a.safetensors")
    mirror = check_adapter_url("http://mirror.svc:8080/a", SOURCES.model_copy(update={"allow_http": True}), "f")
    assert mirror.host == "mirror.svc:8080"


def test_a_lora_is_named_by_name_or_by_url_with_its_hash():
    sha = "ab" * 32
    assert LoraRequest.model_validate({"url": "https://h/a", "sha256": sha}).sha256 == sha
    for bad, words in (({"name": "a", "url": "https://h/a", "sha256": sha}, "either name or url"),
                       ({"scale": 1.0}, "either name or url"),
                       ({"url": "https://h/a"}, "needs sha256"),
                       ({"url": "https://h/a", "sha256": "xyz"}, "should match pattern")):
        with pytest.raises(ValueError, match=words):
            LoraRequest.model_validate(bad)


def spec_for(port: int, **sources) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "family": "flux", "source": "/models/m", "adapterSources": {
        "allowedHosts": [f"127.0.0.1:{port}"], "allowHttp": True, **sources}})


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_many_requests_for_one_url_download_it_once_then_the_disk_serves_it(tmp_path):
    (tmp_path / "files").mkdir()
    blob = os.urandom(300_000)
    (tmp_path / "files" / "a.safetensors").write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    outcomes: list[tuple[str, str, int]] = []
    with serving_files(tmp_path / "files") as (files, base):
        library = AdapterLibrary(tmp_path / "cache", on_fetch=lambda *event: outcomes.append(event))
        spec = spec_for(port_of(base))

        async def scenario():
            try:
                first = await asyncio.gather(*(library.fetch(spec, f"{base}/a.safetensors", sha, "loras.0") for _ in range(5)))
                again = await library.fetch(spec, f"{base}/a.safetensors", sha.upper(), "loras.0")
                return first, again
            finally:
                await library.close()

        first, again = asyncio.run(scenario())
    assert files.gets["/a.safetensors"] == 1
    assert {f.path for f in first} == {again.path} == {str(tmp_path / "cache" / "m" / f"{sha}.safetensors")}
    assert first[0].name == build_adapter_name(sha) and "." not in first[0].name
    assert (tmp_path / "cache" / "m" / f"{sha}.safetensors").read_bytes() == blob
    assert outcomes.count(("m", "downloaded", 300_000)) == 1 and ("m", "cached", 0) in outcomes


def test_a_wrong_hash_an_oversized_file_or_a_missing_one_is_a_422_and_nothing_is_kept(tmp_path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.safetensors").write_bytes(b"x" * 5000)
    with serving_files(tmp_path / "files") as (_, base):
        spec = spec_for(port_of(base))
        small = spec_for(port_of(base), maxAdapterBytes=4096)

        async def refusal(model_spec, path, sha):
            library = AdapterLibrary(tmp_path / "cache")
            try:
                with pytest.raises(InvalidField) as caught:
                    await library.fetch(model_spec, f"{base}/{path}", sha, "loras.2")
                return caught.value
            finally:
                await library.close()

        wrong = asyncio.run(refusal(spec, "a.safetensors", "0" * 64))
        assert wrong.field == "loras.2.sha256"
        assert f"has SHA-256 {hashlib.sha256(b'x' * 5000).hexdigest()}, not {'0' * 64}" in wrong.reason
        big = asyncio.run(refusal(small, "a.safetensors", hashlib.sha256(b"x" * 5000).hexdigest()))
        assert big.field == "loras.2.url" and "over this model's maximum of 4096 bytes" in big.reason
        missing = asyncio.run(refusal(spec, "nope.safetensors", "0" * 64))
        assert missing.field == "loras.2.url" and "HTTP 404" in missing.reason
    assert list((tmp_path / "cache").rglob("*")) == [tmp_path / "cache" / "m"]  # no partial, no file


def test_an_unreachable_host_is_a_422_naming_the_url(tmp_path):
    spec = spec_for(9)  # the discard port: nothing listens

    async def scenario():
        library = AdapterLibrary(tmp_path)
        try:
            await library.fetch(spec, "http://127.0.0.1:9/a.safetensors", "0" * 64, "loras.0")
        finally:
            await library.close()

    with pytest.raises(InvalidField, match="could not be fetched: ConnectError") as caught:
        asyncio.run(scenario())
    assert caught.value.field == "loras.0.url"


def test_the_disk_cache_drops_the_least_recently_used_files_first(tmp_path):
    now = time.time()
    for age, name in enumerate(["newest", "middle", "oldest"]):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - age * 60, now - age * 60))
    assert evict_cache(tmp_path, 300) == []
    assert evict_cache(tmp_path, 150, keep=tmp_path / "oldest.safetensors") == [
        tmp_path / "middle.safetensors", tmp_path / "newest.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oldest.safetensors"]


def test_a_registered_name_cannot_shadow_a_declared_adapter(tmp_path):
    spec = ModelSpec.model_validate({**spec_for(1).to_wire(), "adapters": [{"name": "ink", "source": "/a"}]})

    async def scenario():
        await AdapterLibrary(tmp_path).register(spec, "ink", "http://127.0.0.1:1/a", "0" * 64, 1.0)

    with pytest.raises(InvalidField, match="declared in the model's spec") as caught:
        asyncio.run(scenario())
    assert caught.value.field == "name"


def test_more_adapters_than_the_model_allows_are_refused_before_any_download(tmp_path):
    (tmp_path / "files").mkdir()
    with serving_files(tmp_path / "files") as (files, base):
        spec = spec_for(port_of(base))
        loras = [LoraRequest(url=f"{base}/{i}.safetensors", sha256="0" * 64) for i in range(spec.limits.max_adapters + 1)]

        async def scenario():
            library = AdapterLibrary(tmp_path / "cache")
            try:
                await library.fetch_request(loras, spec)
            finally:
                await library.close()

        with pytest.raises(InvalidField, match="over this model's maximum of 4") as caught:
            asyncio.run(scenario())
    assert caught.value.field == "loras" and sum(files.gets.values()) == 0


def test_an_origin_that_trickles_is_given_up_on_at_the_deadline(tmp_path, monkeypatch):
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from tinyimg.runtime import adapters
    from tinyimg.serve import BackgroundServer

    async def trickle(request):
        async def body():
            for _ in range(100):
                yield b"x"
                await asyncio.sleep(0.1)
        return StreamingResponse(body())

    monkeypatch.setattr(adapters, "FETCH_DEADLINE_SECONDS", 0.5)
    server = BackgroundServer(Starlette(routes=[Route("/slow.safetensors", trickle)])).start()
    try:
        spec = spec_for(port_of(server.url))

        async def scenario():
            library = AdapterLibrary(tmp_path / "cache")
            try:
                await library.fetch(spec, f"{server.url}/slow.safetensors", "0" * 64, "loras.0")
            finally:
                await library.close()

        started = time.monotonic()
        with pytest.raises(InvalidField, match="the download took over 0 s") as caught:
            asyncio.run(scenario())
        assert caught.value.field == "loras.0.url" and time.monotonic() - started < 5
    finally:
        server.stop()
    assert not list((tmp_path / "cache").rglob("*.partial"))
