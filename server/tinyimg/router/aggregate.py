"""Pure builders of the router's own views: /models, /status, /health/ready from the table (and,
for /status, from each pod's /status fetched by the app)."""

from __future__ import annotations

from typing import Any

from tinyimg.router.table import STATE_READY, BackendTable, ModelEntry, PodState

# Per-model counters of a pod's /status that add up meaningfully across pods.
SUMMED_FIELDS = ("queue_depth", "in_flight", "served", "failed")


def build_model_state(entry: ModelEntry, pods: list[PodState]) -> tuple[str, str | None]:
    """The router's view of a model's state: ready when any pod can take a request now."""
    name = entry.name
    if any(p.serves(name) for p in pods):
        return STATE_READY, None
    reported = [p.model_states[name] for p in pods if p.ready and p.reachable and name in p.model_states]
    if "loading" in reported:
        return "loading", None
    if entry.state:
        return entry.state, entry.reason
    if "failed" in reported:
        return "failed", "every reachable backend reports the model as failed"
    if not pods:
        return "unavailable", "no backend known"
    errors = [p.last_error for p in pods if p.last_error]
    return "unavailable", errors[0] if errors else "no ready backend"


def build_model_item(table: BackendTable, entry: ModelEntry) -> dict[str, Any]:
    pods = table.pods_of(entry.name)
    state, reason = build_model_state(entry, pods)
    item: dict[str, Any] = {
        "name": entry.name,
        "family": entry.family,
        "state": state,
        "ready_replicas": sum(p.serves(entry.name) for p in pods),
        "replicas": len(pods),
        "backends": [
            {
                "name": p.name,
                "url": p.url,
                "ready": p.serves(entry.name),
                "reachable": p.reachable,
                "in_flight": p.inflight,
                "queue_depth": p.queue_depth.get(entry.name, 0),
            }
            for p in pods
        ],
    }
    if reason:
        item["reason"] = reason
    return item


def build_models_view(table: BackendTable) -> dict[str, Any]:
    return {"models": [build_model_item(table, table.models[n]) for n in sorted(table.models)]}


def build_health_view(table: BackendTable, mode: str) -> dict[str, Any]:
    models = {
        item["name"]: {k: item[k] for k in ("state", "ready_replicas", "replicas")}
        for item in build_models_view(table)["models"]
    }
    return {"status": "ready" if table.synced else "not_ready", "mode": mode, "models": models}


def _sum_model_fields(status: dict[str, Any]) -> dict[str, float]:
    models = status.get("models")
    items = models.values() if isinstance(models, dict) else models if isinstance(models, list) else []
    totals = dict.fromkeys(SUMMED_FIELDS, 0.0)
    for item in items:
        for key in SUMMED_FIELDS:
            value = item.get(key) if isinstance(item, dict) else None
            if isinstance(value, int | float):
                totals[key] += value
    return totals


def build_status_view(
    table: BackendTable, results: dict[str, dict[str, Any] | str], router: dict[str, Any]
) -> dict[str, Any]:
    """``results``: pod url -> its /status body, or the error text when it could not be fetched."""
    pods = []
    totals: dict[str, float] = dict.fromkeys(SUMMED_FIELDS, 0)
    for url in sorted(table.pods):
        pod = table.pods[url]
        models = sorted(m for m, e in table.models.items() if url in e.pods)
        result = results.get(url, "not fetched")
        item: dict[str, Any] = {"name": pod.name, "url": url, "models": models, "in_flight_from_router": pod.inflight}
        if isinstance(result, dict):
            item.update(reachable=True, status=result)
            for key, value in _sum_model_fields(result).items():
                totals[key] += value
        else:
            item.update(reachable=False, error=result)
        pods.append(item)
    reachable = sum(p["reachable"] for p in pods)
    summary = {k: int(v) if float(v).is_integer() else v for k, v in totals.items()}
    summary.update(pods=len(pods), reachable_pods=reachable, unreachable_pods=len(pods) - reachable)
    return {"router": router, "pods": pods, "totals": summary}
