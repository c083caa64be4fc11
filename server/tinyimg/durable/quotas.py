"""Work budgets shared by every router replica: the GCRA of ``tinyimg.core.quota`` in one Redis
script per admission, on Redis's own clock (replicas' clocks may differ; Redis has one).

While Redis cannot be reached, each replica counts alone (``LocalQuotas``): admitted work may then
reach the replicas' sum for that while, which beats refusing every request. It is logged.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tinyimg.core.quota import WINDOW_SECONDS, Admission, LocalQuotas, build_admission

log = logging.getLogger("tinyimg.quotas")

# KEYS[1] the tenant's TAT; ARGV cost, seconds per image-step, window, refund (1) or admit (0).
# Answers {allowed, seconds the TAT is ahead of now} as strings (Lua numbers would be truncated).
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost, interval, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] == '1' then
  if tat > now then
    local back = math.max(now, tat - cost * interval)
    redis.call('SET', KEYS[1], string.format('%.6f', back), 'PX', math.ceil((back - now) * 1000) + 1000)
  end
  return {'1', '0'}
end
if tat < now then tat = now end
local candidate = tat + cost * interval
if candidate - now <= window + 1e-9 then
  redis.call('SET', KEYS[1], string.format('%.6f', candidate), 'PX', math.ceil((candidate - now) * 1000) + 1000)
  return {'1', string.format('%.6f', candidate - now)}
end
return {'0', string.format('%.6f', tat - now)}
"""


def quota_key(tenant: str) -> str:
    return f"tinyimg:quota:{tenant}"


class RedisQuotas:
    shared = True

    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._gcra = redis.register_script(GCRA)
        self.fallback = LocalQuotas()

    async def _run(self, tenant: str, cost: float, limit: float, refund: bool) -> tuple[bool, float] | None:
        try:
            allowed, ahead = await self._gcra(keys=[quota_key(tenant)], args=[cost, WINDOW_SECONDS / limit, WINDOW_SECONDS,
                                                                               "1" if refund else "0"])
        except (RedisError, OSError) as err:
            log.warning("shared quotas unavailable, counting in this process alone: %s", err)
            return None
        return allowed in (b"1", "1"), float(ahead)

    async def admit(self, tenant: str, cost: float, limit: float) -> Admission:
        answer = await self._run(tenant, cost, limit, refund=False)
        if answer is None:
            return await self.fallback.admit(tenant, cost, limit)
        return build_admission(answer[0], answer[1], cost, limit)

    async def refund(self, tenant: str, cost: float, limit: float) -> None:
        if await self._run(tenant, cost, limit, refund=True) is None:
            await self.fallback.refund(tenant, cost, limit)

    async def peek(self, tenant: str, limit: float) -> Admission:
        try:
            raw = await self.redis.get(quota_key(tenant))
            now_s, now_us = await self.redis.time()
        except (RedisError, OSError):
            return await self.fallback.peek(tenant, limit)
        ahead = max(0.0, float(raw) - (now_s + now_us / 1_000_000)) if raw else 0.0
        return build_admission(True, ahead, 0.0, limit)
