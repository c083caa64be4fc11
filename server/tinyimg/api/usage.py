"""GET /v1/usage: the calling key's tenant, its limits, its budget now and its load here."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tinyimg.api.deps import ApiKeyDep, EngineDep, JobsDep, read_tenancy
from tinyimg.core.quota import build_rate_headers
from tinyimg.wire.contract import EDGE_ERRORS, TenantStatus, UsageResponse, build_error_responses, build_usage_response

router = APIRouter(tags=["usage"])


@router.get("/v1/usage", response_model=UsageResponse, responses=build_error_responses(401, 429, *EDGE_ERRORS))
async def read_usage(request: Request, response: Response, engine: EngineDep, jobs: JobsDep, _auth: ApiKeyDep) -> UsageResponse:
    tenancy = read_tenancy(request)
    tenant = tenancy["tenant"]
    limit, quotas = tenant.image_steps_per_minute, jobs.quotas
    budget = await quotas.peek(tenant.name, limit) if limit is not None and quotas is not None and tenancy["charge"] else None
    if budget is not None:
        response.headers.update(build_rate_headers(budget))
    load = engine.status()["tenants"].get(tenant.name)
    return build_usage_response(tenant, TenantStatus.model_validate(load) if load else None, budget,
                                bool(quotas is not None and quotas.shared))
