"""Whose request heads the next batch: priority class first, then deficit round robin across
tenants on image-steps. Pure: ``pick_next`` takes what waits and the state, and returns the
choice and the next state; the queue (``tinyimg.runtime.jobqueue``) applies it when the batch is
taken.

- **Classes are strict.** While an ``interactive`` request waits, no ``standard`` or ``batch`` one
  heads a batch (a running batch is never pre-empted: the picker is asked only between batches).
- **Within a class, deficit round robin (DRR).** Tenants with work waiting take turns in the
  order they arrived; on its turn a tenant is granted a quantum of image-steps and heads batches
  while its oldest request's cost fits in what it has been granted; then the turn moves on. A
  tenant with one request waiting behind another's twenty therefore starts within two batches,
  and over a long run each busy tenant is served the same image-steps, whatever its requests'
  sizes. The quantum is the largest cost among the heads, so every turn serves at least one.
- **Idle tenants bank nothing.** A tenant with nothing waiting leaves the ring and its deficit
  goes; batch mates (who ride along with a head) are charged too, so riding is not free.
- **maxInFlight holds a tenant back.** A tenant at its limit of running requests is skipped; its
  requests wait (the others are not held up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

EPSILON = 1e-9


@dataclass(frozen=True)
class Waiting:
    """One waiting request, as the picker sees it (in arrival order)."""

    tenant: str
    rank: int  # 0 interactive, 1 standard, 2 batch
    cost: float  # image-steps
    held: bool = False  # its tenant is at its maxInFlight


@dataclass(frozen=True)
class FairState:
    deficits: Mapping[str, float] = field(default_factory=dict)
    ring: tuple[str, ...] = ()  # tenants with work waiting, in turn order
    turn: int = 0  # index in ``ring`` of the tenant whose turn it is
    granted: bool = False  # that tenant has had its quantum this turn


def build_ring(waiting: Sequence[Waiting], state: FairState) -> tuple[tuple[str, ...], int, bool]:
    """The ring for what waits now (tenants gone idle leave, new ones join at the end), and where
    the turn stands in it: at the same tenant, or at the next survivor after one that left."""
    present = dict.fromkeys(w.tenant for w in waiting)
    ring = tuple(t for t in state.ring if t in present)
    ring += tuple(t for t in present if t not in ring)
    if not state.ring:
        return ring, 0, False
    old = state.ring
    for offset in range(len(old)):
        tenant = old[(state.turn + offset) % len(old)]
        if tenant in present:
            return ring, ring.index(tenant), state.granted and offset == 0
    return ring, 0, False


def pick_next(waiting: Sequence[Waiting], state: FairState) -> tuple[int | None, FairState]:
    """The index in ``waiting`` of the request to head the next batch (None: every waiting
    tenant is at its maxInFlight), and the state once it has been taken."""
    eligible = [i for i, w in enumerate(waiting) if not w.held]
    if not eligible:
        return None, state
    rank = min(waiting[i].rank for i in eligible)
    heads: dict[str, int] = {}
    for i in eligible:
        if waiting[i].rank == rank:
            heads.setdefault(waiting[i].tenant, i)
    ring, pos, granted = build_ring(waiting, state)
    deficits = {t: d for t, d in state.deficits.items() if t in ring}
    quantum = max(waiting[i].cost for i in heads.values()) or 1.0
    unserved = 0
    while True:
        tenant = ring[pos]
        if tenant in heads:
            if not granted:
                deficits[tenant] = deficits.get(tenant, 0.0) + quantum
                granted = True
            cost = waiting[heads[tenant]].cost
            if deficits[tenant] + EPSILON >= cost:
                deficits[tenant] -= cost
                return heads[tenant], FairState(deficits, ring, pos, True)
        pos, granted, unserved = (pos + 1) % len(ring), False, unserved + 1
        if unserved >= len(ring):  # a whole round served nobody: skip the rounds that would not either
            rounds = min(math.ceil((waiting[i].cost - deficits.get(t, 0.0)) / quantum) for t, i in heads.items())
            for t in heads:
                deficits[t] = deficits.get(t, 0.0) + max(0, rounds - 1) * quantum
            unserved = 0


def charge(state: FairState, tenant: str, cost: float) -> FairState:
    """A batch mate's cost, charged to its tenant (it rode along with another's head)."""
    if tenant not in state.ring:
        return state
    deficits = dict(state.deficits)
    deficits[tenant] = deficits.get(tenant, 0.0) - cost
    return FairState(deficits, state.ring, state.turn, state.granted)
