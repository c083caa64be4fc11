"""Periodic polls of every pod's /status and /models: queue depth per model, the model states a
pod reports, its backlog (waiting + generating) for the balancer, and whether it answers at all.

Both answers are read with the contract's models (tinyimg.wire.contract), the same ones the model server
answers with: a pod that breaks the contract counts as unreachable, with the validation error as
the reason, rather than being half-understood.

A poll that times out once is not enough to take a pod out of the rotation: a pod busy with work
can be slow to answer while it serves well (the forwarder also keeps a pod whose answer is late).
It keeps what the last good poll said until ``SLOW_POLLS_TO_UNREACHABLE`` polls in a row time
out; a refused connection, an error status or a broken answer count at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from tinyimg.router.table import BackendTable, PodState
from tinyimg.wire.contract import ModelInfoResponse, ModelsResponse, StatusResponse

log = logging.getLogger("tinyimg.router.poller")

SLOW_POLLS_TO_UNREACHABLE = 3


def read_queue_depths(status: StatusResponse) -> dict[str, int]:
    return {name: model.queue_depth for name, model in status.models.items()}


def read_backlogs(status: StatusResponse) -> dict[str, int]:
    """model -> waiting + generating requests on this pod."""
    return {name: model.queue_depth + model.in_flight for name, model in status.models.items()}


def read_model_states(models: ModelsResponse) -> dict[str, dict[str, Any]]:
    """model -> {"state", "family", "reason", "defaults"} from a pod's /models answer."""
    return {m.name: {"state": m.state, "family": m.family, "reason": m.reason, "defaults": read_size_defaults(m)}
            for m in models.models}


def read_adapter_keys(status: StatusResponse, models: ModelsResponse) -> dict[str, frozenset[str]]:
    """model -> the adapters a pod holds: declared names (every pod has them) and the run-time ones
    by SHA-256 and by the label they were asked by (a registered name, or a URL)."""
    keys = {m.name: {a.name for a in m.adapters or []} for m in models.models}
    for name, model in status.models.items():
        for adapter in model.resident_adapters:
            keys.setdefault(name, set()).update((adapter.sha256, adapter.label))
    return {name: frozenset(k) for name, k in keys.items()}


def read_size_defaults(model: ModelInfoResponse) -> tuple[int, int, int] | None:
    """(width, height, steps) a request that names none gets, when the pod says."""
    values = tuple(getattr(model.defaults, name, None) for name in ("width", "height", "steps"))
    return (values[0], values[1], values[2]) if all(isinstance(v, int) for v in values) else None  # type: ignore[return-value]


async def poll_pod(client: httpx.AsyncClient, pod: PodState, timeout: float) -> dict[str, dict[str, Any]]:
    """Refresh ``pod`` from its /status and /models; returns what /models said (empty when unreachable)."""
    try:
        status_answer, models_answer = await asyncio.gather(
            client.get(pod.url + "/status", timeout=timeout), client.get(pod.url + "/models", timeout=timeout)
        )
        status_answer.raise_for_status()
        models_answer.raise_for_status()
        models = ModelsResponse.model_validate_json(models_answer.content)
        states = read_model_states(models)
        status = StatusResponse.model_validate_json(status_answer.content)
    except httpx.TimeoutException as err:
        pod.slow_polls += 1
        if pod.slow_polls < SLOW_POLLS_TO_UNREACHABLE and not isinstance(err, httpx.ConnectTimeout):
            log.info("backend %s slow to answer its poll (%d in a row)", pod.url, pod.slow_polls)
            return {}
        return mark_unreachable(pod, err)
    except (httpx.HTTPError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        return mark_unreachable(pod, err)
    pod.queue_depth = read_queue_depths(status)
    pod.backlog = read_backlogs(status)
    pod.model_states = {name: s["state"] for name, s in states.items()}
    pod.tenants = status.tenants
    pod.read_adapters(read_adapter_keys(status, models), time.monotonic())
    pod.reachable, pod.last_error, pod.slow_polls = True, None, 0
    return states


def mark_unreachable(pod: PodState, err: Exception) -> dict[str, dict[str, Any]]:
    if pod.reachable:
        log.warning("backend %s unreachable: %s", pod.url, err or type(err).__name__)
    pod.reachable, pod.last_error = False, str(err) or type(err).__name__
    return {}


async def poll_all(client: httpx.AsyncClient, table: BackendTable, timeout: float) -> None:
    """Poll every pod at once; a static model without a family learns it from its backends."""
    pods = list(table.pods.values())
    results = await asyncio.gather(*(poll_pod(client, p, timeout) for p in pods))
    for states in results:
        for name, s in states.items():
            entry = table.models.get(name)
            if entry is not None and entry.family is None and s["family"]:
                entry.family = s["family"]
            if entry is not None and s["defaults"] is not None:
                entry.defaults = s["defaults"]


async def run_poller(client: httpx.AsyncClient, table: BackendTable, interval: float, timeout: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await poll_all(client, table, timeout)
        except Exception:  # a bug in one round must not stop the polling for good
            log.exception("poll round failed")
