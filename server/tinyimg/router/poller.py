"""Periodic polls of every pod's /status and /models: queue depth per model, the model states a
pod reports, its backlog (waiting + generating) for the balancer, and whether it answers at all.

Both answers are read with the contract's models (tinyimg.contract), the same ones the model server
answers with: a pod that breaks the contract counts as unreachable, with the validation error as
the reason, rather than being half-understood.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from tinyimg.contract import ModelsResponse, StatusResponse
from tinyimg.router.table import BackendTable, PodState

log = logging.getLogger("tinyimg.router.poller")


def read_queue_depths(status: StatusResponse) -> dict[str, int]:
    return {name: model.queue_depth for name, model in status.models.items()}


def read_backlogs(status: StatusResponse) -> dict[str, int]:
    """model -> waiting + generating requests on this pod."""
    return {name: model.queue_depth + model.in_flight for name, model in status.models.items()}


def read_model_states(models: ModelsResponse) -> dict[str, dict[str, Any]]:
    """model -> {"state", "family", "reason"} from a pod's /models answer."""
    return {m.name: {"state": m.state, "family": m.family, "reason": m.reason} for m in models.models}


async def poll_pod(client: httpx.AsyncClient, pod: PodState, timeout: float) -> dict[str, dict[str, Any]]:
    """Refresh ``pod`` from its /status and /models; returns what /models said (empty when unreachable)."""
    try:
        status_answer, models_answer = await asyncio.gather(
            client.get(pod.url + "/status", timeout=timeout), client.get(pod.url + "/models", timeout=timeout)
        )
        status_answer.raise_for_status()
        models_answer.raise_for_status()
        states = read_model_states(ModelsResponse.model_validate_json(models_answer.content))
        status = StatusResponse.model_validate_json(status_answer.content)
    except (httpx.HTTPError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        if pod.reachable:
            log.warning("backend %s unreachable: %s", pod.url, err or type(err).__name__)
        pod.reachable, pod.last_error = False, str(err) or type(err).__name__
        return {}
    pod.queue_depth = read_queue_depths(status)
    pod.backlog = read_backlogs(status)
    pod.model_states = {name: s["state"] for name, s in states.items()}
    pod.reachable, pod.last_error = True, None
    return states


async def poll_all(client: httpx.AsyncClient, table: BackendTable, timeout: float) -> None:
    """Poll every pod at once; a static model without a family learns it from its backends."""
    pods = list(table.pods.values())
    results = await asyncio.gather(*(poll_pod(client, p, timeout) for p in pods))
    for states in results:
        for name, s in states.items():
            entry = table.models.get(name)
            if entry is not None and entry.family is None and s["family"]:
                entry.family = s["family"]


async def run_poller(client: httpx.AsyncClient, table: BackendTable, interval: float, timeout: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await poll_all(client, table, timeout)
        except Exception:  # a bug in one round must not stop the polling for good
            log.exception("poll round failed")
