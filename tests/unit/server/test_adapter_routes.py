"""/v1/adapters on a model server app (a stand-in engine: nothing is generated here; the files are
really fetched from a loopback server): with keys on, only an admin tenant's key registers or
deletes; any valid key lists; a plain keys file's keys are all admins; a deletion reaches the engine."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.support.adapters import serving_files
from tests.support.fake_engine import FakeEngine
from tinyimg.api.app import create_app
from tinyimg.runtime.adapters import build_adapter_name
from tinyimg.spec import parse_config

KEYS = """\
tenants:
  - name: ops
    admin: true
    keys: [ops-key]
  - name: studio
    keys: [studio-key]
"""
BLOB = b"not really a LoRA, but the routes only fetch it" * 100
SHA = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "x.safetensors").write_bytes(BLOB)
    with serving_files(tmp_path / "files") as (_, base):
        yield base


def make_client(tmp_path, base: str, keys: str) -> tuple[httpx.AsyncClient, FakeEngine]:
    (tmp_path / "keys").write_text(keys)
    config = parse_config({
        "apiKeysFile": str(tmp_path / "keys"), "adapterCacheDir": str(tmp_path / "cache"),
        "models": [{"name": "m", "family": "flux", "source": "/models/m",
                    "adapterSources": {"allowedHosts": [base.removeprefix("http://")], "allowHttp": True}}],
    })
    engine = FakeEngine(config)
    transport = httpx.ASGITransport(app=create_app(config, engine), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test"), engine


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_only_an_admin_tenant_changes_adapters_and_any_key_lists_them(tmp_path, files):
    client, engine = make_client(tmp_path, files, KEYS)
    body = {"model": "m", "name": "x", "url": f"{files}/x.safetensors", "sha256": SHA}
    async with client:
        refused = await client.post("/v1/adapters", json=body, headers=auth("studio-key"))
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "admin_required")
        assert (await client.post("/v1/adapters", json=body)).status_code == 401
        created = await client.post("/v1/adapters", json=body, headers=auth("ops-key"))
        assert created.status_code == 201 and created.json()["sha256"] == SHA
        assert (tmp_path / "cache" / "m" / f"{SHA}.safetensors").read_bytes() == BLOB
        listed = await client.get("/v1/adapters", headers=auth("studio-key"))
        assert [a["name"] for a in listed.json()["models"]["m"]["registered"]] == ["x"]
        assert (await client.get("/v1/adapters")).status_code == 401
        assert (await client.delete("/v1/adapters/m/x", headers=auth("studio-key"))).status_code == 403
        assert (await client.delete("/v1/adapters/m/x", headers=auth("ops-key"))).status_code == 200
        assert engine.dropped_adapters == [("m", {build_adapter_name(SHA)})]
        unknown = await client.get("/v1/adapters", params={"model": "nope"}, headers=auth("ops-key"))
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")


async def test_a_plain_keys_file_makes_every_key_an_admin(tmp_path, files):
    client, _ = make_client(tmp_path, files, "key-one\nkey-two\n")
    body = {"model": "m", "name": "x", "url": f"{files}/x.safetensors", "sha256": SHA}
    async with client:
        assert (await client.post("/v1/adapters", json=body, headers=auth("key-two"))).status_code == 201


async def test_a_registration_is_checked_like_a_request(tmp_path, files):
    client, _ = make_client(tmp_path, files, "k\n")
    body = {"model": "m", "name": "x", "url": f"{files}/x.safetensors", "sha256": SHA}
    async with client:
        for change, field in (({"name": "-bad"}, "name"), ({"sha256": "0" * 64}, "adapter.sha256"),
                              ({"url": "https://elsewhere.example/x"}, "adapter.url"), ({"scale": 5}, "scale")):
            answer = await client.post("/v1/adapters", json={**body, **change}, headers=auth("k"))
            assert (answer.status_code, answer.json()["error"]["field"]) == (422, field), answer.text
