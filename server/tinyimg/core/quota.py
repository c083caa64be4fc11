"""Work budgets: a tenant's image-steps per minute, as a generic cell rate algorithm (GCRA).

Each tenant has one number, its theoretical arrival time (TAT): when its budget would be whole
again. Admitting work of cost ``c`` moves it ``c * 60 / limit`` seconds later; work is refused when
that would put it more than a minute ahead of now. So a full minute's budget may be spent at once,
and it refills continuously (``limit / 60`` image-steps a second), the way OpenAI's per-minute limits
behave. ``decide`` is the pure rule; ``LocalQuotas`` keeps the TATs of one process, and
``tinyimg.durable.quotas.RedisQuotas`` keeps them in Redis (the same rule, in one script), so
router replicas share one budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tinyimg.core.errors import ApiError

WINDOW_SECONDS = 60.0  # the budget is per minute; a minute's worth may be spent at once


@dataclass(frozen=True)
class Admission:
    allowed: bool
    limit: float  # image-steps per minute
    remaining: float  # image-steps that could be admitted now
    reset_seconds: float  # until the budget is whole again
    retry_after: float  # seconds until this request would fit (0 when allowed)


def build_admission(allowed: bool, ahead: float, cost: float, limit: float) -> Admission:
    """The answer, from how far the tenant's TAT is ahead of now (after admitting, or as it
    stands when refused)."""
    interval = WINDOW_SECONDS / limit  # seconds per image-step
    remaining = max(0.0, limit - ahead / interval)
    if allowed:
        return Admission(True, limit, remaining, ahead, 0.0)
    wait = ahead + cost * interval - WINDOW_SECONDS if cost <= limit else WINDOW_SECONDS
    return Admission(False, limit, remaining, ahead, wait)


def decide(tat: float, now: float, cost: float, limit: float) -> tuple[Admission, float]:
    """GCRA: the answer for work of ``cost`` image-steps and the tenant's next TAT."""
    base = max(tat, now)
    candidate = base + cost * WINDOW_SECONDS / limit
    if candidate - now <= WINDOW_SECONDS + 1e-9:
        return build_admission(True, candidate - now, cost, limit), candidate
    return build_admission(False, base - now, cost, limit), base


def read_state(tat: float, now: float, limit: float) -> Admission:
    """The budget as it stands (for /v1/usage), admitting nothing."""
    answer, _ = decide(tat, now, 0.0, limit)
    return answer


def build_rate_headers(admission: Admission) -> dict[str, str]:
    """``X-RateLimit-*`` as OpenAI and GitHub send them: the limit per minute, what is left now,
    and the seconds until the budget is whole again."""
    return {
        "X-RateLimit-Limit": f"{admission.limit:g}",
        "X-RateLimit-Remaining": f"{math.floor(admission.remaining * 1000) / 1000:g}",
        "X-RateLimit-Reset": str(math.ceil(admission.reset_seconds)),
    }


class OverBudget(ApiError):
    def __init__(self, tenant: str, cost: float, admission: Admission):
        if cost > admission.limit:
            message = (f"tenant {tenant!r}: this request costs {cost:g} image-steps, more than the whole budget of "
                       f"{admission.limit:g} per minute (width*height/1024^2*steps*images)")
        else:
            message = (f"tenant {tenant!r}: over its budget of {admission.limit:g} image-steps per minute "
                       f"(this request costs {cost:g}, {admission.remaining:g} left now)")
        super().__init__(message, 429, "quota_exceeded", retry_after=max(admission.retry_after, 0.001),
                         extra={"tenant": tenant}, headers=build_rate_headers(admission))


class Quotas(Protocol):
    """Budgets kept by one process (``LocalQuotas``) or shared in Redis (``RedisQuotas``)."""

    shared: bool

    async def admit(self, tenant: str, cost: float, limit: float) -> Admission: ...

    async def refund(self, tenant: str, cost: float, limit: float) -> None: ...

    async def peek(self, tenant: str, limit: float) -> Admission: ...


class LocalQuotas:
    """One process's TATs (tenants come from the keys file: a bounded map)."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.tats: dict[str, float] = {}

    async def admit(self, tenant: str, cost: float, limit: float) -> Admission:
        answer, self.tats[tenant] = decide(self.tats.get(tenant, 0.0), self.clock(), cost, limit)
        return answer

    async def refund(self, tenant: str, cost: float, limit: float) -> None:
        if tenant in self.tats:
            self.tats[tenant] -= cost * WINDOW_SECONDS / limit

    async def peek(self, tenant: str, limit: float) -> Admission:
        return read_state(self.tats.get(tenant, 0.0), self.clock(), limit)
