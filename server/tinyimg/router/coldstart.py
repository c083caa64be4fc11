"""Scale from zero: hold a request for an autoscaled model that has no ready pod, ask for a pod
once, and let the request go on when one is ready.

Per model, a bounded waiting room. The first request of a cold start calls ``trigger(model)``
(in Kubernetes: the ImageModel's demand annotation, which the operator's autoscaler counts as load);
every request that arrives while the room is not empty shares that one trigger. A held request
leaves the room when a pod of its model serves (then it is forwarded as usual), when the model's
``coldStartTimeoutSeconds`` passes or the room is full (503 + Retry-After, codes
``cold_start_timeout`` / ``waiting_room_full``), or when its client goes away (the slot is freed).
All of it lives on the app's event loop, like the table: plain counters, no locks.

What wakes a GPU model is guarded: a request is held only once its body has passed the shape
checks (an invalid one is 422 at once, waking nothing); one client (its API key, or its address
without keys) may hold at most ``PER_CLIENT_DEFAULT`` places of a model's room (429
``too_many_waiting`` past it); and a cold start asks for a pod once, however many requests come
and go (``trigger`` again only after a pod served, or after the cold-start timeout passed).

The same room holds, for a short grace and without asking for a pod, a request for a model whose
ImageModel is Ready while this router has not yet seen its pod (``build_discovery_grace``); past
the grace it is 503 ``no_ready_backend``, as a model without pods always was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from tinyimg.core.tracing import build_exemplar, span
from tinyimg.router.errors import RouterError
from tinyimg.router.metrics import RouterMetrics
from tinyimg.router.table import BackendTable

log = logging.getLogger("tinyimg.router.coldstart")

CAPACITY_DEFAULT = 100  # requests held per model at once
PER_CLIENT_DEFAULT = 10  # of which one client may hold at most this many
CHECK_INTERVAL = 0.1  # seconds between looks at the table (and at the client) while holding
TIMEOUT_RETRY_AFTER = 5.0  # a cold start that timed out may still finish: try again soon


class WaitingRoom:
    def __init__(self, table: BackendTable, metrics: RouterMetrics, trigger: Callable[[str], Awaitable[None]],
                 capacity: int = CAPACITY_DEFAULT, per_client: int = PER_CLIENT_DEFAULT):
        self.table, self.metrics, self.trigger, self.capacity = table, metrics, trigger, capacity
        self.per_client = per_client
        self.waiting: dict[str, int] = {}  # model -> requests held now
        self.by_client: dict[tuple[str, str], int] = {}  # (model, client) -> requests held now
        self.triggers: dict[str, asyncio.Task[None]] = {}  # model -> the demand call of this cold start
        self.triggered_at: dict[str, float] = {}  # model -> when this cold start asked for a pod

    def holds(self, model: str) -> bool:
        """Whether a request for ``model`` waits here rather than failing: a model that the router
        knows, with no pod that serves it now, and autoscaled (a cold start) or Ready by its
        ImageModel (a pod this router's watches have not shown yet)."""
        entry = self.table.models.get(model)
        return bool(entry and entry.cold_start_timeout and not self.table.ready_pods(model))

    async def admit(self, model: str, disconnected: Callable[[], Awaitable[bool]], client: str = "",
                    validate: Callable[[], None] | None = None) -> None:
        """Return at once when ``model`` has a pod that serves (or is not held); else check the
        request (``validate`` raises a 422) and ``hold`` it."""
        if self.holds(model):
            if validate is not None:
                validate()
            with span("router.cold_start", {"tinyimg.model": model}):
                await self.hold(model, disconnected, client)
        else:
            self.triggered_at.pop(model, None)  # a pod serves: the next time at zero is a new cold start

    def _should_ask(self, model: str, timeout: float) -> bool:
        """One demand per cold start: not while this one's is recent (within its timeout)."""
        asked = self.triggered_at.get(model)
        return model not in self.triggers and (asked is None or time.monotonic() - asked >= timeout)

    async def hold(self, model: str, disconnected: Callable[[], Awaitable[bool]], client: str = "") -> None:
        """Returns once a pod of ``model`` serves; raises RouterError (503, or 499 when the client left)."""
        entry = self.table.models[model]
        timeout = float(entry.cold_start_timeout or 0)
        if self.waiting.get(model, 0) >= self.capacity:
            self._outcome(model, "full")
            raise RouterError(503, "waiting_room_full",
                              f"model {model!r} is starting and {self.capacity} requests already wait for it",
                              TIMEOUT_RETRY_AFTER)
        mine = (model, client)
        if self.by_client.get(mine, 0) >= self.per_client:
            self._outcome(model, "full")
            raise RouterError(429, "too_many_waiting",
                              f"model {model!r} is starting and {self.per_client} of your requests already wait for it",
                              TIMEOUT_RETRY_AFTER)
        self.waiting[model] = self.waiting.get(model, 0) + 1
        self.by_client[mine] = self.by_client.get(mine, 0) + 1
        self.metrics.waiting.labels(model).set(self.waiting[model])
        if entry.scales_from_zero and self._should_ask(model, timeout):
            self.triggered_at[model] = time.monotonic()
            self.triggers[model] = asyncio.create_task(self._ask(model))
        started = time.monotonic()
        try:
            while not self.table.ready_pods(model):
                if time.monotonic() - started >= timeout:
                    self._outcome(model, "timeout")
                    if not entry.scales_from_zero:
                        raise RouterError(503, "no_ready_backend",
                                          f"model {model!r} is Ready but no pod of it reached this router within {timeout:g}s",
                                          TIMEOUT_RETRY_AFTER)
                    raise RouterError(503, "cold_start_timeout",
                                      f"model {model!r} had no ready pod within its cold-start timeout of {timeout:g}s",
                                      TIMEOUT_RETRY_AFTER)
                if await disconnected():
                    self._outcome(model, "disconnected")
                    raise RouterError(499, "client_closed_request", "the client went away while the model was starting")
                await asyncio.sleep(CHECK_INTERVAL)
            self._outcome(model, "ready")
            self.metrics.cold_start_duration.labels(model).observe(time.monotonic() - started, build_exemplar())
            self.triggered_at.pop(model, None)  # a pod serves: the next time at zero is a new cold start
        finally:
            self.waiting[model] -= 1
            self.by_client[mine] -= 1
            if not self.by_client[mine]:
                del self.by_client[mine]
            self.metrics.waiting.labels(model).set(self.waiting[model])
            if not self.waiting[model]:
                del self.waiting[model]
                self.triggers.pop(model, None)  # done; triggered_at says whether this cold start asked already

    async def _ask(self, model: str) -> None:
        try:
            await self.trigger(model)
            self.metrics.demand_triggers.labels(model).inc()
        except Exception as err:
            log.warning("recording demand for model %s failed: %s", model, err or type(err).__name__)

    def _outcome(self, model: str, outcome: str) -> None:
        self.metrics.held.labels(model, outcome).inc()
