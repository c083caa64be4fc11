"""GET /v1/usage: the calling key's tenant, its limits, its budget now and its load on the pods."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tinyimg.core.quota import build_rate_headers
from tinyimg.router.aggregate import sum_tenants
from tinyimg.router.state import AccessDep, StateDep
from tinyimg.router.tenancy import read_request_tenant
from tinyimg.wire.contract import EDGE_ERRORS, UsageResponse, build_error_responses, build_usage_response

router = APIRouter(tags=["usage"])


@router.get("/v1/usage", response_model=UsageResponse, dependencies=[AccessDep],
            responses=build_error_responses(401, 429, *EDGE_ERRORS))
async def read_usage(request: Request, response: Response, state: StateDep) -> UsageResponse:
    tenant = read_request_tenant(request)
    limit = tenant.image_steps_per_minute
    budget = await state.quotas.peek(tenant.name, limit) if limit is not None else None
    if budget is not None:
        response.headers.update(build_rate_headers(budget))
    load = sum_tenants(pod.tenants for pod in state.table.pods.values()).get(tenant.name)
    return build_usage_response(tenant, load, budget, state.quotas.shared)
