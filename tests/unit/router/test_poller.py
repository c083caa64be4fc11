"""The poller reads pods' answers with the shared contract models (in-process ASGI pods)."""

import httpx
import pytest
from fastapi import FastAPI

from tinyimg.router.poller import poll_pod
from tinyimg.router.table import PodState

STATUS = {"uptime_seconds": 3.0, "devices": [{"name": "cpu", "kind": "cpu"}],
          "models": {"m": {"queue_depth": 2, "in_flight": 1, "served": 5, "failed": 0}}}
MODELS = {"models": [{"name": "m", "family": "sdxl", "source": None, "state": "ready"}]}


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
    assert states == {"m": {"state": "ready", "family": "sdxl", "reason": None}}


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
