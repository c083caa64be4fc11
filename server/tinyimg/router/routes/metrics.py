"""GET /metrics: the router's Prometheus text; the ready-pod gauge is set from the table here."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tinyimg.router.state import AccessDep, StateDep
from tinyimg.wire.contract import EDGE_ERRORS, build_error_responses

router = APIRouter(tags=["metrics"], dependencies=[AccessDep])


@router.get("/metrics", response_class=Response, responses=build_error_responses(401, 429, *EDGE_ERRORS))
async def read_metrics(state: StateDep) -> Response:
    gauge, zero = state.metrics.ready_pods, state.metrics.scaled_to_zero
    gauge.clear()
    zero.clear()
    for name, entry in state.table.models.items():
        gauge.labels(name).set(len(state.table.ready_pods(name)))
        zero.labels(name).set(1 if entry.state == "scaled-to-zero" else 0)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
