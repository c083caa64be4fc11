"""Tenants at the router: whose request it is, what it costs, and whether the tenant's budget
(``imageStepsPerMinute``) admits it, before anything is forwarded (over-quota work never reaches a
pod). The budget is counted in Redis when the router has one (every replica shares it), else in
this process (``tinyimg.core.quota``).

A request's cost is its image-steps (``tinyimg.core.tenants.image_steps``) from the body's own
fields, and where it names none from the model's defaults as its pods report them (or 1024², 30
steps before any pod has). Work the pod refuses (any answer but 2xx) is given back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from tinyimg.core.quota import OverBudget
from tinyimg.core.tenants import DEFAULT_TENANT, Tenant, image_steps
from tinyimg.router.state import RouterState

# Counted for a model before any of its pods said what its defaults are.
FALLBACK_DEFAULTS = (1024, 1024, 30)
TENANT_SCOPE_KEY = "tenant"


def read_request_tenant(request: Request) -> Tenant:
    """Set by the access check (``tinyimg.router.state.check_access``)."""
    tenant: Tenant = request.scope.get("state", {}).get(TENANT_SCOPE_KEY, DEFAULT_TENANT)
    return tenant


def read_positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def estimate_cost(fields: Mapping[str, Any], defaults: tuple[int, int, int] | None) -> float:
    """A request's image-steps from its fields (ours or OpenAI's ``size``/``n``); what it leaves
    out, from the model's defaults. Malformed values count as unset: the pod refuses them (422)
    and the work is given back."""
    width, height, steps = defaults or FALLBACK_DEFAULTS
    size = fields.get("size")
    if isinstance(size, str) and "x" in size:
        w, _, h = size.partition("x")
        if w.isdigit() and h.isdigit() and len(w) <= 5 and len(h) <= 5:
            width, height = int(w), int(h)
    width = read_positive(fields.get("width")) or width
    height = read_positive(fields.get("height")) or height
    steps = read_positive(fields.get("steps")) or steps
    images = read_positive(fields.get("num_images")) or read_positive(fields.get("n")) or 1
    if isinstance(fields.get("n"), str) and str(fields["n"]).isdigit():  # a multipart form's field
        images = max(1, int(str(fields["n"])[:4]))
    return image_steps(width, height, steps, images)


def read_body_fields(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Charge:
    tenant: Tenant
    cost: float


async def admit_work(state: RouterState, tenant: Tenant, model: str, fields: Mapping[str, Any]) -> Charge | None:
    """Charge the tenant's budget for this request, or refuse it (429 ``quota_exceeded`` with
    ``Retry-After`` and ``X-RateLimit-*``). None when the tenant has no budget."""
    limit = tenant.image_steps_per_minute
    if limit is None:
        return None
    entry = state.table.models.get(model)
    cost = estimate_cost(fields, entry.defaults if entry is not None else None)
    admission = await state.quotas.admit(tenant.name, cost, limit)
    if not admission.allowed:
        state.metrics.tenant_rejected.labels(tenant.name, "image_steps").inc()
        state.metrics.rejected.labels("quota").inc()
        raise OverBudget(tenant.name, cost, admission)
    return Charge(tenant, cost)


async def settle(state: RouterState, charge: Charge | None, status: int) -> None:
    """Admitted work a pod accepted is counted; work it refused (or that never reached one) is
    given back to the budget."""
    if charge is None:
        return
    if 200 <= status < 300:
        state.metrics.tenant_image_steps.labels(charge.tenant.name).inc(charge.cost)
        return
    limit = charge.tenant.image_steps_per_minute
    assert limit is not None
    await state.quotas.refund(charge.tenant.name, charge.cost, limit)
