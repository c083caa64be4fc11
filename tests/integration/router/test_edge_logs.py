"""One request id through router and server: both write an access line (tinyimg.http), and both
lines carry the same id, whether the client sent a usable one or not."""

import logging

import httpx
import pytest

from tests.support.fake_engine import FakeEngine
from tinyimg.api.app import create_app
from tinyimg.router.app import create_router_app
from tinyimg.router.discovery_static import StaticDiscovery
from tinyimg.router.settings import RouterSettings
from tinyimg.serve import BackgroundServer
from tinyimg.spec import parse_config

CONFIG = parse_config({"models": [{"name": "m", "family": "sdxl", "source": "org/m",
                                   "defaults": {"steps": 2, "width": 64, "height": 64}}]})


@pytest.mark.parametrize(
    ("given", "kept"),
    [("client-id_1.2", True), ("x" * 65, False), ("bad id with spaces", False), (None, False)],
    ids=["safe-kept", "too-long-replaced", "unsafe-replaced", "absent-made"],
)
async def test_router_and_server_log_one_request_under_one_id(caplog, given, kept):
    caplog.set_level(logging.INFO, logger="tinyimg.access")
    with BackgroundServer(create_app(CONFIG, FakeEngine(CONFIG))) as backend:
        app = create_router_app(RouterSettings(), StaticDiscovery({"m": [backend.url]}))
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 5000))
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://r") as r:
            headers = {"X-Request-ID": given} if given is not None else {}
            response = await r.post("/generate", json={"model": "m", "prompt": "a cube"}, headers=headers)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    assert (request_id == given) is kept
    assert response.json()["request_id"] == request_id  # the server's body: it kept the router's id
    lines = [r for r in caplog.records if r.name == "tinyimg.access" and getattr(r, "path", "") == "/generate"]
    assert len(lines) == 2  # the router's and the server's
    assert {line.request_id for line in lines} == {request_id}
    assert {line.status for line in lines} == {200}
    assert all(line.duration_seconds >= 0 for line in lines)
