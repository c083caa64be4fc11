"""Periodic polls of every pod's /status and /models: queue depth per model, the
model states a pod reports, its backlog (waiting + generating) for the balancer, and whether it
answers at all.

The model server reports ``/status`` as ``{"models": {name: {"queue_depth", "in_flight", ...}}}``
and ``/models`` as ``{"models": [{"name", "family", "state", ...}]}``; the readers below also accept
a list of models with ``name`` keys, so a small format change does not blind the balancer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import httpx

from tinyimg.router.table import BackendTable, PodState

log = logging.getLogger("tinyimg.router.poller")


def _model_items(doc: Any) -> Iterable[tuple[str, dict[str, Any]]]:
    models = doc.get("models", {}) if isinstance(doc, dict) else doc
    if isinstance(models, dict):
        return [(k, v) for k, v in models.items() if isinstance(v, dict)]
    if isinstance(models, list):
        return [(m["name"], m) for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)]
    return []


def read_counts(status: Any, *keys: str) -> dict[str, int]:
    """model -> the sum of the numeric fields ``keys`` (absent ones count 0), from a /status body."""
    counts = {}
    for name, item in _model_items(status):
        values = [item.get(k) for k in keys]
        if any(isinstance(v, int | float) for v in values):
            counts[name] = sum(int(v) for v in values if isinstance(v, int | float))
    return counts


def read_model_states(models: Any) -> dict[str, dict[str, Any]]:
    """model -> {"state", "family", "reason"} from a pod's /models body."""
    out = {}
    for name, item in _model_items(models):
        state: Any = item.get("state")
        if isinstance(state, dict):  # {"state": {"state": "failed", "reason": ...}} is accepted too
            state, reason = state.get("state"), state.get("reason")
        else:
            reason = item.get("reason")
        out[name] = {"state": state or "unknown", "family": item.get("family"), "reason": reason}
    return out


async def poll_pod(client: httpx.AsyncClient, pod: PodState, timeout: float) -> dict[str, dict[str, Any]]:
    """Refresh ``pod`` from its /status and /models; returns what /models said (empty when unreachable)."""
    try:
        status, models = await asyncio.gather(
            client.get(pod.url + "/status", timeout=timeout), client.get(pod.url + "/models", timeout=timeout)
        )
        status.raise_for_status()
        models.raise_for_status()
        states = read_model_states(models.json())
        body = status.json()
        pod.queue_depth = read_counts(body, "queue_depth")
        pod.backlog = read_counts(body, "queue_depth", "in_flight")
    except (httpx.HTTPError, ValueError) as err:
        if pod.reachable:
            log.warning("backend %s unreachable: %s", pod.url, err or type(err).__name__)
        pod.reachable, pod.last_error = False, str(err) or type(err).__name__
        return {}
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
