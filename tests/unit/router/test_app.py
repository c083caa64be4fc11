"""The router app in-process (httpx ASGI transport): request handling that needs no backend."""

import contextlib

import httpx
import pytest

from tinyimg.core.auth import hash_key
from tinyimg.core.tenants import Tenant
from tinyimg.router.app import create_router_app
from tinyimg.router.discovery_static import StaticDiscovery
from tinyimg.router.settings import RouterSettings

# Port 9 (discard) on loopback: nothing listens, so polls and forwards fail at once.
DEAD = "http://127.0.0.1:9"


@contextlib.asynccontextmanager
async def router_client(settings=None, backends=None):
    app = create_router_app(settings or RouterSettings(), StaticDiscovery(backends or {"a": [DEAD], "b": [DEAD]}))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        yield client


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"not json", 422, "invalid_request"),
        (b'{"prompt": "x"}', 422, "invalid_request"),
        (b"[1, 2]", 422, "invalid_request"),
        (b'{"model": "a", "prompt": "' + b"x" * 2000 + b'"}', 413, "payload_too_large"),
    ],
    ids=["not-json", "no-model-with-two-known", "not-an-object", "too-large"],
)
async def test_bad_generation_bodies_are_refused_before_forwarding(content, status, code):
    async with router_client(RouterSettings(max_body_bytes=1024)) as client:
        response = await client.post("/generate", content=content, headers={"X-Request-ID": "bad-1"})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["request_id"] == "bad-1"
    assert response.headers["x-request-id"] == "bad-1"


async def test_the_only_known_model_is_meant_when_the_body_names_none():
    async with router_client(backends={"a": []}) as client:
        response = await client.post("/generate", json={"prompt": "x"})
    assert (response.status_code, response.json()["error"]["code"]) == (503, "no_ready_backend")
    assert "'a'" in response.json()["error"]["message"]


async def test_unknown_path_gets_the_error_shape_and_a_generated_request_id():
    async with router_client() as client:
        response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert len(response.headers["x-request-id"]) == 32
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


async def test_protect_health_puts_probes_and_metrics_behind_the_key():
    settings = RouterSettings(key_hashes=(hash_key("k"),), open_paths=())
    async with router_client(settings) as client:
        assert (await client.get("/health")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/health", headers={"Authorization": "Bearer k"})).status_code == 200


async def test_rate_limit_without_keys_applies_per_client_address():
    async with router_client(RouterSettings(rate_limit=0.01, rate_burst=1)) as client:
        assert (await client.get("/models")).status_code == 200
        limited = await client.get("/models")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) == 100
        assert (await client.get("/health")).status_code == 200  # open paths are not counted


async def test_adapter_changes_through_the_router_need_an_admin_tenant_and_a_dead_model_is_503():
    tenants = (Tenant("ops", key_hashes=(hash_key("ops-key"),), admin=True), Tenant("studio", key_hashes=(hash_key("s-key"),)))
    body = {"model": "a", "name": "x", "url": "https://h/x.safetensors", "sha256": "0" * 64}
    async with router_client(RouterSettings(tenants=tenants)) as client:
        refused = await client.post("/v1/adapters", json=body, headers={"authorization": "Bearer s-key"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "admin_required")
        deleted = await client.delete("/v1/adapters/a/x", headers={"authorization": "Bearer s-key"})
        assert deleted.status_code == 403
        assert (await client.post("/v1/adapters", json=body)).status_code == 401
        # An admin gets as far as the pods: none is ready here.
        dead = await client.post("/v1/adapters", json=body, headers={"authorization": "Bearer ops-key"})
        assert (dead.status_code, dead.json()["error"]["code"]) == (503, "no_ready_backend")
        shape = await client.post("/v1/adapters", json={"model": "a"}, headers={"authorization": "Bearer ops-key"})
        assert (shape.status_code, shape.json()["error"]["field"]) == (422, "name")
