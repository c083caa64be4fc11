"""Pure builders of the router's own answers: /models, /status, /health/ready from the table (and
from what the backends said, fetched by ``tinyimg.router.fetch``), in the contract's shapes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tinyimg.router.table import STATE_READY, BackendTable, ModelEntry, PodState
from tinyimg.wire.contract import (
    BackendInfo,
    ModelInfoResponse,
    ModelReadiness,
    PodStatus,
    RouterHealthResponse,
    RouterModelInfoResponse,
    RouterModelsResponse,
    RouterSelfStatus,
    RouterStatusResponse,
    StatusResponse,
    StatusTotals,
    TenantStatus,
)

# Per-model counters of a pod's /status that add up meaningfully across pods.
SUMMED_FIELDS = ("queue_depth", "in_flight", "served", "failed")
# What a backend's /models says about a model that the router passes on as it is: what the model
# accepts (defaults, limits, modes, samplers, adapters), the same on every replica, and what that
# replica's warm-up measured (acceleration: every replica runs the same pipeline on the same kind of GPU).
BACKEND_FIELDS = {
    "negative_prompt_supported", "defaults", "limits", "offload", "request_timeout_seconds", "modes", "schedulers",
    "adapters", "acceleration",
}


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


def build_model_item(
    table: BackendTable, entry: ModelEntry, backend: ModelInfoResponse | None
) -> RouterModelInfoResponse:
    """The server's per-model shape (defaults and limits from a backend that answered), with the
    router's state and replicas. ``source`` is never shown: it is a backend's local concern."""
    pods = table.pods_of(entry.name)
    state, reason = build_model_state(entry, pods)
    known = backend.model_dump(include=BACKEND_FIELDS) if backend else {}
    return RouterModelInfoResponse(
        **known,
        name=entry.name,
        family=entry.family or (backend.family if backend else None),
        source=None,
        state=state,
        reason=reason,
        ready_replicas=sum(p.serves(entry.name) for p in pods),
        replicas=len(pods),
        backends=[
            BackendInfo(
                name=p.name, url=p.url, ready=p.serves(entry.name), reachable=p.reachable, in_flight=p.inflight,
                queue_depth=p.queue_depth.get(entry.name, 0),
            )
            for p in pods
        ],
    )


def build_models_view(
    table: BackendTable, backends: dict[str, ModelInfoResponse] | None = None
) -> RouterModelsResponse:
    backends = backends or {}
    return RouterModelsResponse(
        models=[build_model_item(table, table.models[n], backends.get(n)) for n in sorted(table.models)]
    )


def build_health_view(table: BackendTable, mode: str) -> RouterHealthResponse:
    models = {
        item.name: ModelReadiness(state=item.state, ready_replicas=item.ready_replicas, replicas=item.replicas)
        for item in build_models_view(table).models
    }
    return RouterHealthResponse(status="ready" if table.synced else "not_ready", mode=mode, models=models)


def build_status_view(
    table: BackendTable, results: dict[str, StatusResponse | str], router: RouterSelfStatus
) -> RouterStatusResponse:
    """``results``: pod url -> its /status, or the error text when it could not be read."""
    pods = []
    totals = dict.fromkeys(SUMMED_FIELDS, 0)
    for url in sorted(table.pods):
        pod = table.pods[url]
        result = results.get(url, "not fetched")
        item = PodStatus(
            name=pod.name, url=url, models=sorted(m for m, e in table.models.items() if url in e.pods),
            in_flight_from_router=pod.inflight, reachable=isinstance(result, StatusResponse),
        )
        if isinstance(result, StatusResponse):
            item.status = result
            for model in result.models.values():
                for key in SUMMED_FIELDS:
                    totals[key] += getattr(model, key)
        else:
            item.error = result
        pods.append(item)
    reachable = sum(p.reachable for p in pods)
    return RouterStatusResponse(
        router=router,
        pods=pods,
        totals=StatusTotals(**totals, pods=len(pods), reachable_pods=reachable, unreachable_pods=len(pods) - reachable),
        tenants=sum_tenants(r.tenants for r in results.values() if isinstance(r, StatusResponse)),
    )


def sum_tenants(views: Iterable[Mapping[str, TenantStatus]]) -> dict[str, TenantStatus]:
    """Each tenant's load over several pods."""
    out: dict[str, TenantStatus] = {}
    for view in views:
        for name, load in view.items():
            total = out.setdefault(name, TenantStatus())
            total.queued += load.queued
            total.in_flight += load.in_flight
            total.image_steps += load.image_steps
            for reason, count in load.rejected.items():
                total.rejected[reason] = total.rejected.get(reason, 0) + count
    return dict(sorted(out.items()))
