"""The router's aggregated answers are built from, and validate against, the same contract the
model server sends (tinyimg.wire.contract): a real server app on loopback (uvicorn, stand-in engine)
behind the router app."""

import contextlib

import httpx
import pytest

from tests.support.fake_engine import FakeEngine
from tinyimg.api.app import create_app
from tinyimg.router.app import create_router_app
from tinyimg.router.discovery_static import StaticDiscovery
from tinyimg.router.settings import RouterSettings
from tinyimg.serve import BackgroundServer
from tinyimg.spec import parse_config
from tinyimg.wire.contract import (
    ModelInfoResponse,
    ModelsResponse,
    RouterHealthResponse,
    RouterModelsResponse,
    RouterStatusResponse,
    StatusResponse,
)

CONFIG = parse_config({"models": [
    {"name": "m1", "family": "sdxl", "source": "/weights/m1", "limits": {"maxSteps": 40},
     "adapters": [{"name": "ink", "source": "org/ink-lora", "scale": 0.6}]},
    {"name": "m2", "family": "flux", "source": "org/m2", "defaults": {"steps": 3}},
]})


@pytest.fixture(scope="module")
def backend():
    with BackgroundServer(create_app(CONFIG, FakeEngine(CONFIG))) as server:
        yield server.url


@contextlib.asynccontextmanager
async def router_and_server(backend):
    app = create_router_app(RouterSettings(), StaticDiscovery({"m1": [backend], "m2": [backend]}))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://r") as router, \
            httpx.AsyncClient(base_url=backend) as server:
        yield router, server


async def test_router_models_are_the_servers_models_plus_replicas(backend):
    async with router_and_server(backend) as (router, server):
        routed = RouterModelsResponse.model_validate((await router.get("/models")).json())
        served = ModelsResponse.model_validate((await server.get("/models")).json())
    by_name = {m.name: m for m in served.models}
    assert [m.name for m in routed.models] == ["m1", "m2"]
    for item in routed.models:
        # The same per-model shape: each router item is a valid server item too.
        ModelInfoResponse.model_validate(item.model_dump())
        mine = by_name[item.name]
        assert (item.family, item.defaults, item.limits) == (mine.family, mine.defaults, mine.limits)
        assert item.request_timeout_seconds == mine.request_timeout_seconds == 300
        assert (item.modes, item.schedulers, item.adapters) == (mine.modes, mine.schedulers, mine.adapters)
        assert (item.state, item.ready_replicas, item.replicas, item.source) == ("ready", 1, 1, None)
    assert routed.models[0].limits.max_steps == 40 and routed.models[1].defaults.steps == 3
    m1, m2 = routed.models
    assert m1.modes == ["txt2img", "img2img", "inpaint"] and "dpmpp_2m_karras" in m1.schedulers
    assert [(a.name, a.scale, a.state) for a in m1.adapters] == [("ink", 0.6, "ready")]
    assert m2.schedulers == ["flow_match_euler"] and m2.adapters == []


async def test_router_status_carries_each_pods_status_in_the_servers_shape(backend):
    async with router_and_server(backend) as (router, server):
        routed = RouterStatusResponse.model_validate((await router.get("/status")).json())
        served = StatusResponse.model_validate((await server.get("/status")).json())
    (pod,) = routed.pods
    assert pod.reachable and pod.status is not None
    assert pod.status.models == served.models and pod.status.devices == served.devices
    assert (routed.totals.pods, routed.totals.reachable_pods, routed.totals.served) == (1, 1, 0)
    assert routed.router.process is not None and routed.router.process.rss_bytes > 0


async def test_router_readiness_validates_against_the_contract(backend):
    async with router_and_server(backend) as (router, _):
        ready = RouterHealthResponse.model_validate((await router.get("/health/ready")).json())
    assert ready.status == "ready" and ready.models["m1"].ready_replicas == 1


async def test_a_pod_answering_outside_the_contract_is_reported_not_guessed():
    async def odd(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"models": [{"name": "m1", "queue_depth": 1}]}'})

    with BackgroundServer(odd) as pod:
        app = create_router_app(RouterSettings(), StaticDiscovery({"m1": [pod.url]}))
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://r") as r:
            status = RouterStatusResponse.model_validate((await r.get("/status")).json())
    assert not status.pods[0].reachable
    assert "does not match the contract" in status.pods[0].error
