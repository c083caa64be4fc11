"""The poller reads pods' answers with the shared contract models (in-process ASGI pods)."""

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI

from tinyimg.router.poller import SLOW_POLLS_TO_UNREACHABLE, poll_pod, read_adapter_keys
from tinyimg.router.requests import read_adapter_keys as read_body_adapters
from tinyimg.router.table import PodState
from tinyimg.wire.contract import ModelsResponse, StatusResponse

STATUS = {"uptime_seconds": 3.0, "devices": [{"name": "cpu", "kind": "cpu"}],
          "models": {"m": {"queue_depth": 2, "in_flight": 1, "served": 5, "failed": 0}},
          "tenants": {"studio": {"queued": 4, "in_flight": 1, "image_steps": 2.5, "rejected": {"max_queued": 3}}}}
MODELS = {"models": [{"name": "m", "family": "sdxl", "source": None, "state": "ready",
                      "defaults": {"width": 512, "height": 768, "steps": 4, "guidance_scale": 1.0}}]}


def pod_app(status: object, models: object) -> FastAPI:
    app = FastAPI()
    app.get("/status")(lambda: status)
    app.get("/models")(lambda: models)
    return app


async def poll(app: FastAPI) -> tuple[PodState, dict]:
    pod = PodState(url="http://pod", name="pod")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        states = await poll_pod(client, pod, timeout=1.0)
    return pod, states


async def test_a_pod_speaking_the_contract_gives_its_queue_backlog_and_states():
    pod, states = await poll(pod_app(STATUS, MODELS))
    assert (pod.reachable, pod.queue_depth, pod.backlog, pod.model_states) == (True, {"m": 2}, {"m": 3}, {"m": "ready"})
    assert states == {"m": {"state": "ready", "family": "sdxl", "reason": None, "defaults": (512, 768, 4)}}
    assert pod.tenants["studio"].model_dump() == {"queued": 4, "in_flight": 1, "image_steps": 2.5, "rejected": {"max_queued": 3}}


@pytest.mark.parametrize(
    ("status", "models"),
    [
        ({**STATUS, "models": [{"name": "m", "queue_depth": 2}]}, MODELS),  # a list where the contract has a map
        (STATUS, {"models": {"m": {"state": "ready"}}}),  # a map where the contract has a list
        ({**STATUS, "models": {"m": {"queue_depth": "two"}}}, MODELS),
    ],
    ids=["status-models-as-list", "models-as-map", "queue-depth-not-a-number"],
)
async def test_a_pod_breaking_the_contract_is_unreachable_with_the_reason(status, models):
    pod, states = await poll(pod_app(status, models))
    assert (pod.reachable, states, pod.backlog) == (False, {}, {})
    assert "validation error" in (pod.last_error or "")


@pytest.fixture()
async def slow_pod():
    """A loopback pod whose answers wait ``state["delay"]`` seconds (beyond the poll's timeout when slow)."""
    state = {"delay": 0.0}
    bodies = {b"/status": json.dumps(STATUS).encode(), b"/models": json.dumps(MODELS).encode()}

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(state["delay"])
                body = bodies[head.split(b" ")[1]]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", state
    server.close()


async def test_a_pod_slow_to_answer_stays_in_rotation_until_its_polls_time_out_three_times_in_a_row(slow_pod):
    url, state = slow_pod
    pod = PodState(url=url, name="pod")
    async with httpx.AsyncClient() as client:
        await poll_pod(client, pod, timeout=0.2)
        assert (pod.reachable, pod.backlog) == (True, {"m": 3})
        state["delay"] = 0.5
        for _ in range(SLOW_POLLS_TO_UNREACHABLE - 1):
            assert await poll_pod(client, pod, timeout=0.2) == {}
            assert (pod.reachable, pod.backlog, pod.last_error) == (True, {"m": 3}, None)  # the last good poll's view
        state["delay"] = 0.0
        await poll_pod(client, pod, timeout=0.2)  # one good answer starts the count again
        state["delay"] = 0.5
        for _ in range(SLOW_POLLS_TO_UNREACHABLE - 1):
            await poll_pod(client, pod, timeout=0.2)
        assert pod.reachable
        await poll_pod(client, pod, timeout=0.2)
        assert pod.reachable is False and pod.last_error


async def test_a_refused_connection_is_unreachable_at_once():
    pod = PodState(url="http://127.0.0.1:9", name="pod")
    async with httpx.AsyncClient() as client:
        await poll_pod(client, pod, timeout=0.5)
    assert pod.reachable is False and pod.last_error


def test_a_pod_holds_its_declared_adapters_and_its_resident_ones_by_hash_and_label():
    models = ModelsResponse.model_validate({"models": [
        {"name": "m", "family": "flux", "source": None, "state": "ready", "reason": None, "device": "cpu",
         "offload": "none", "adapters": [{"name": "ink", "scale": 1.0, "state": "ready"}]}]})
    status = StatusResponse.model_validate({"uptime_seconds": 1, "devices": [], "models": {"m": {"resident_adapters": [
        {"sha256": "ab" * 32, "label": "https://h/a.safetensors", "devices": ["cpu"]},
        {"sha256": "cd" * 32, "label": "kite", "devices": ["cpu"]}]}}})
    assert read_adapter_keys(status, models) == {
        "m": frozenset({"ink", "ab" * 32, "https://h/a.safetensors", "cd" * 32, "kite"})}


@pytest.mark.parametrize(("body", "keys"), [
    (b'{"model": "m", "prompt": "x"}', set()),
    (b'{"loras": [{"url": "https://h/a", "sha256": "ABAB"}, {"name": "kite"}]}', {"abab", "kite"}),
    (b'{"loras": "nonsense"}', set()),
    (b'{"loras": [1, {"url": 5}]}', set()),
    (b'["loras"]', set()),
    (b'{"loras": [', set()),
])
def test_the_router_reads_the_adapters_a_body_names(body, keys):
    assert read_body_adapters(body) == keys
