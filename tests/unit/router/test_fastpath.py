"""The generation fast path answers POST /generate and /v1/images/generations itself and passes
everything else on, unchanged, to the app behind it (FastAPI's routes)."""

import hashlib

import httpx
import pytest

from tinyimg.router.discovery_static import StaticDiscovery
from tinyimg.router.fastpath import GenerationFastPath
from tinyimg.router.forward import Forwarder, build_forward_pool, build_timeouts
from tinyimg.router.settings import RouterSettings
from tinyimg.router.state import RouterState


class Inner:
    """Stands in for FastAPI's app behind the middleware: records what reached it."""

    def __init__(self):
        self.seen = []

    async def __call__(self, scope, receive, send):
        self.seen.append((scope["method"], scope["path"]))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


def client(inner, state):
    app = GenerationFastPath(inner, state)

    async def with_request_id(scope, receive, send):  # what the edge outside it sets
        scope.setdefault("state", {})["request_id"] = "rid-1"
        await app(scope, receive, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(with_request_id), base_url="http://router")


@pytest.mark.parametrize(("method", "path"), [("GET", "/generate"), ("POST", "/v1/jobs"), ("POST", "/generate/"),
                                              ("GET", "/models"), ("POST", "/v1/images/edits")])
async def test_other_requests_reach_the_app_behind(method, path):
    inner = Inner()
    async with client(inner, RouterState(RouterSettings(), StaticDiscovery({}))) as c:
        response = await c.request(method, path)
    assert (response.status_code, response.text, inner.seen) == (299, "inner", [(method, path)])


@pytest.mark.parametrize("path", ["/generate", "/v1/images/generations"])
async def test_generation_is_answered_here_with_the_routes_checks_and_error_shape(path):
    inner = Inner()
    settings = RouterSettings(key_hashes=(hashlib.sha256(b"the-key").hexdigest(),))
    state = RouterState(settings, StaticDiscovery({}))
    state.forwarder = Forwarder(build_forward_pool(), state.table, state.metrics, 1.0, build_timeouts(5, 1))
    async with client(inner, state) as c:
        refused = await c.post(path, json={"model": "m", "prompt": "x"})
        unknown = await c.post(path, json={"model": "m", "prompt": "x"}, headers={"Authorization": "Bearer the-key"})
        bad = await c.post(path, content=b"{not json", headers={"Authorization": "Bearer the-key"})
    assert inner.seen == []
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "unauthorized"
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "body"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
