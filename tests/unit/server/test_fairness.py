"""The fair picker (tinyimg.runtime.fairness) as a table: whose request heads each next batch,
run to the end of what waits, the way the queue applies it (the head taken, its state kept)."""

from __future__ import annotations

import pytest

from tinyimg.runtime.fairness import FairState, Waiting, charge, pick_next

STANDARD, INTERACTIVE, BATCH = 1, 0, 2


def drain(waiting: list[Waiting], state: FairState | None = None, limit: int = 10_000) -> list[str]:
    """Pick heads one at a time (batches of one) until nothing waits; the tenants in start order."""
    state, order = state or FairState(), []
    waiting = list(waiting)
    while waiting and len(order) < limit:
        index, state = pick_next(waiting, state)
        assert index is not None
        order.append(waiting.pop(index).tenant)
    return order


def flood(tenant: str, count: int, rank: int = STANDARD, cost: float = 1.0) -> list[Waiting]:
    return [Waiting(tenant, rank, cost) for _ in range(count)]


@pytest.mark.parametrize(("waiting", "expected_start"), [
    # One tenant's 20 queued ahead of another's one: the one starts second (FIFO: 21st).
    (flood("a", 20) + flood("b", 1), {"b": 1}),
    # Three tenants, the flooder first: each newcomer's first request within the first round.
    (flood("a", 30) + flood("b", 2) + flood("c", 1), {"b": 1, "c": 2}),
    # Sizes differ (b's requests cost 4x a's): a's turn is one quantum (b's cost) of its small
    # requests, then b's starts: work is what is shared, not slots.
    (flood("a", 20, cost=1.0) + flood("b", 3, cost=4.0), {"b": 4}),
    # ... and the other way round: b's one small request goes right after a's first big one.
    (flood("a", 20, cost=4.0) + flood("b", 3, cost=1.0), {"b": 1}),
    # interactive overtakes queued batch work, whatever arrived first.
    (flood("bulk", 10, BATCH) + flood("chat", 2, INTERACTIVE), {"chat": 0}),
    # standard overtakes batch, interactive overtakes both.
    (flood("bulk", 5, BATCH) + flood("web", 2, STANDARD) + flood("chat", 1, INTERACTIVE), {"chat": 0, "web": 1}),
])
def test_whose_request_starts_when(waiting, expected_start):
    order = drain(waiting)
    assert sorted(order) == sorted(w.tenant for w in waiting)  # everyone is served, once each
    assert {t: order.index(t) for t in expected_start} == expected_start


def test_classes_are_strict_a_batch_tenant_waits_for_every_interactive_request():
    order = drain(flood("bulk", 3, BATCH) + flood("chat", 5, INTERACTIVE) + flood("chat2", 5, INTERACTIVE))
    assert order[:10].count("bulk") == 0 and order[10:] == ["bulk"] * 3
    assert order[:4] == ["chat", "chat2", "chat", "chat2"]  # round robin inside the class


@pytest.mark.parametrize(("cost_a", "cost_b"), [(1.0, 1.0), (1.0, 4.0), (0.25, 3.0), (2.5, 0.1)])
def test_over_a_long_run_busy_tenants_are_served_equal_image_steps(cost_a, cost_b):
    """Both keep work waiting (refilled as it is taken); 2000 picks: image-steps shared 1:1 ± 5 %."""
    state, served = FairState(), {"a": 0.0, "b": 0.0}
    waiting = flood("a", 5, cost=cost_a) + flood("b", 5, cost=cost_b)
    for _ in range(2000):
        index, state = pick_next(waiting, state)
        assert index is not None
        taken = waiting.pop(index)
        served[taken.tenant] += taken.cost
        waiting.append(Waiting(taken.tenant, STANDARD, taken.cost))
    assert served["a"] / served["b"] == pytest.approx(1.0, rel=0.05)


def test_an_idle_tenant_banks_nothing():
    """a is served alone for a long while, then b arrives with a flood of its own: they alternate
    from there (a's long idle spell did not make b's credit, nor a's history a debt)."""
    state = FairState()
    for _ in range(50):
        _, state = pick_next(flood("a", 1), state)
    order = drain(flood("a", 10) + flood("b", 10), state)
    assert order[:6] in (["a", "b"] * 3, ["b", "a"] * 3)


def test_a_tenant_at_its_max_in_flight_is_skipped_and_nothing_is_picked_when_all_are():
    held = [Waiting("a", STANDARD, 1.0, held=True), Waiting("b", STANDARD, 1.0)]
    index, _ = pick_next(held, FairState())
    assert index == 1
    index, state = pick_next([Waiting("a", STANDARD, 1.0, held=True)], FairState())
    assert (index, state) == (None, FairState())


def test_a_held_interactive_tenant_does_not_block_the_standard_class():
    index, _ = pick_next([Waiting("chat", INTERACTIVE, 1.0, held=True), Waiting("web", STANDARD, 1.0)], FairState())
    assert index == 1


def test_batch_mates_are_charged_to_their_tenants():
    """b rode along in a's batches twice: a's turn comes back before b's."""
    index, state = pick_next(flood("a", 3) + flood("b", 3), FairState())
    assert index == 0
    state = charge(charge(state, "b", 1.0), "b", 1.0)
    order = drain(flood("a", 2) + flood("b", 3), state)
    assert order[:3] == ["a", "a", "b"]
