"""GET /metrics: the router's Prometheus text; the ready-pod gauge is set from the table here."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tinyimg.http.metrics import render_metrics
from tinyimg.router.state import AccessDep, StateDep
from tinyimg.wire.contract import EDGE_ERRORS, build_error_responses

router = APIRouter(tags=["metrics"], dependencies=[AccessDep])


@router.get("/metrics", response_class=Response, responses=build_error_responses(401, 429, *EDGE_ERRORS))
async def read_metrics(state: StateDep, request: Request) -> Response:
    gauge, zero = state.metrics.ready_pods, state.metrics.scaled_to_zero
    gauge.clear()
    zero.clear()
    for name, entry in state.table.models.items():
        gauge.labels(name).set(len(state.table.ready_pods(name)))
        zero.labels(name).set(1 if entry.state == "scaled-to-zero" else 0)
    return render_metrics(state.metrics.registry, request.headers.get("accept"))
