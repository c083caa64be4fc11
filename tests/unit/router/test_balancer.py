import pytest

from tinyimg.router.balancer import (
    LATENCY_HALF_LIFE_SECONDS,
    Candidate,
    LeastExpectedWait,
    aged_latency,
    choose_backend,
    pick_revision,
    update_latency,
)
from tinyimg.router.table import BackendRef, BackendTable, ModelBackends


def c(url: str, inflight: int = 0, backlog: int = 0, sent: int = 0, latency: float = 0.0, age: float = 0.0) -> Candidate:
    return Candidate(url=url, inflight=inflight, backlog=backlog, sent=sent, latency=latency, age=age)


CASES = [
    ("no candidates", [], frozenset(), None),
    ("single idle pod", [c("a")], frozenset(), "a"),
    ("fewest router in-flight wins", [c("a", inflight=2), c("b", inflight=1)], frozenset(), "b"),
    ("the pod's polled backlog counts", [c("a", backlog=3), c("b", inflight=2)], frozenset(), "b"),
    ("backlog from other clients counts", [c("a", inflight=1, backlog=4), c("b", inflight=2, backlog=2)], frozenset(), "b"),
    # The router's own request is already in the pod's backlog: one request, not two.
    ("own request is not counted twice", [c("a", inflight=1, backlog=1), c("b", inflight=1, backlog=0)], frozenset(), "a"),
    ("router count wins when the poll is stale", [c("a", inflight=3, backlog=0), c("b", backlog=2)], frozenset(), "b"),
    ("tie goes to the pod sent fewer requests", [c("a", sent=5), c("b", sent=4)], frozenset(), "b"),
    ("full tie goes to the lowest url", [c("b"), c("a")], frozenset(), "a"),
    ("excluded pod is skipped even when idle", [c("a"), c("b", inflight=9)], frozenset({"a"}), "b"),
    ("all excluded", [c("a"), c("b")], frozenset({"a", "b"}), None),
    # Speed: expected wait = (load + 1) x seconds per request.
    ("idle slow pod loses to a busy fast pod", [c("slow", latency=3.0), c("fast", inflight=1, latency=0.1)], frozenset(), "fast"),
    ("fast pod with a long backlog loses to an idle slow one", [c("slow", latency=1.0), c("fast", backlog=12, latency=0.1)], frozenset(), "slow"),
    ("untimed idle pod counts as average speed", [c("new"), c("timed", latency=0.01, sent=3)], frozenset(), "new"),
    ("busy untimed pod is not piled on", [c("new", inflight=1), c("timed", latency=0.1)], frozenset(), "timed"),
    ("equal speed falls back to the load", [c("a", inflight=2, latency=0.5), c("b", inflight=1, latency=0.5)], frozenset(), "b"),
    # Ageing: a pod measured slow long ago is tried again; a fresh slow measurement still counts.
    ("freshly stalled pod is avoided", [c("stalled", latency=4.0), c("ok", inflight=3, latency=0.1)], frozenset(), "ok"),
    ("stalled pod unmeasured for 10 s is tried again", [c("stalled", latency=4.0, age=10), c("ok", inflight=3, latency=0.1)], frozenset(), "stalled"),
    ("a fast pod's own fresh time is not aged", [c("a", inflight=1, latency=0.1), c("b", latency=0.5, age=0.0)], frozenset(), "a"),
]


@pytest.mark.parametrize(("candidates", "exclude", "expected"), [x[1:] for x in CASES], ids=[x[0] for x in CASES])
def test_choose_backend_picks_least_loaded(candidates, exclude, expected):
    choice = choose_backend(candidates, exclude)
    assert (choice.url if choice else None) == expected


def test_idle_pods_take_turns_when_sent_counts_are_updated():
    sent = {"a": 0, "b": 0, "c": 0}
    order = []
    for _ in range(6):
        url = choose_backend([c(u, sent=n) for u, n in sent.items()]).url
        sent[url] += 1
        order.append(url)
    assert order == ["a", "b", "c", "a", "b", "c"]


@pytest.mark.parametrize(
    ("previous", "sample", "expected"),
    [
        pytest.param(None, 2.0, 2.0, id="first-sample-is-the-average"),
        pytest.param(1.0, 2.0, 1.3, id="new-sample-weighs-0.3"),
        pytest.param(1.0, 1.0, 1.0, id="steady-stays"),
    ],
)
def test_update_latency_is_a_moving_average(previous, sample, expected):
    assert update_latency(previous, sample) == pytest.approx(expected)


def test_old_samples_weigh_less_by_their_age():
    half = update_latency(6.0, 0.1, age=LATENCY_HALF_LIFE_SECONDS)
    assert half == pytest.approx(0.35 * 6.0 + 0.65 * 0.1)
    # One measurement after a long quiet spell replaces a stall's estimate almost entirely.
    assert update_latency(6.0, 0.1, age=10 * LATENCY_HALF_LIFE_SECONDS) == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize(
    ("latency", "age", "neutral", "expected"),
    [
        pytest.param(4.0, 0.0, 0.1, 4.0, id="fresh-estimate-unchanged"),
        pytest.param(4.0, LATENCY_HALF_LIFE_SECONDS, 0.0 + 0.2, 2.1, id="half-way-after-one-half-life"),
        pytest.param(0.02, LATENCY_HALF_LIFE_SECONDS, 0.1, 0.06, id="fast-estimate-ages-up-too"),
        pytest.param(4.0, 1000.0, 0.1, 0.1, id="old-estimate-is-the-neutral-value"),
        pytest.param(0.0, 5.0, 0.1, 0.0, id="untimed-stays-untimed"),
    ],
)
def test_aged_latency_moves_toward_neutral_with_time(latency, age, neutral, expected):
    assert aged_latency(latency, age, neutral) == pytest.approx(expected)


def test_recovered_pod_gets_picked_again_within_seconds_of_its_stall():
    """A pod whose last sample was a 15 s stall, beside a busy pod at 0.1 s per request: simulated
    time in 0.1 s steps; the stalled pod is picked again in under 6 s."""
    for t in range(0, 200):
        age = t / 10
        choice = choose_backend([c("stalled", latency=0.7 * 0.1 + 0.3 * 15.0, age=age), c("ok", inflight=2, latency=0.1)])
        if choice.url == "stalled":
            break
    assert age < 6.0, age


def lease_table(*urls: str) -> BackendTable:
    table = BackendTable()
    table.sync({"m": ModelBackends(backends=tuple(BackendRef(u, u) for u in urls))})
    return table


def test_a_lease_counts_the_request_until_released_once_and_samples_latency_only_when_asked():
    table = lease_table("http://a", "http://b")
    balancer = LeastExpectedWait(table)
    first = balancer.choose("m")
    second = balancer.choose("m")
    assert {first.url, second.url} == {"http://a", "http://b"}  # the leased pod is loaded: the next goes elsewhere
    assert [p.inflight for p in table.pods.values()] == [1, 1]
    first.release(sample=True)
    first.release(sample=True)  # a second release changes nothing
    second.release()
    assert [p.inflight for p in table.pods.values()] == [0, 0]
    assert "m" in table.pods[first.url].latency and "m" not in table.pods[second.url].latency
    assert balancer.choose("m", frozenset({"http://a", "http://b"})) is None
    assert not balancer.has_choice("m", frozenset({"http://a", "http://b"})) and balancer.has_choice("m")


X = frozenset({"x"})


def h(url: str, **fields) -> Candidate:
    """A pod holding adapter x."""
    return Candidate(url=url, inflight=fields.pop("inflight", 0), backlog=fields.pop("backlog", 0), sent=0,
                     adapters=frozenset({"x", "declared"}), **fields)


AFFINITY_CASES = [
    ("the holder is chosen over an idle pod", [c("a"), h("b")], X, "b"),
    ("the holder is chosen over an idle pod while within two requests", [c("a"), h("b", inflight=2)], X, "b"),
    ("past the slack the best pod wins", [c("a"), h("b", inflight=3)], X, "a"),
    ("timed: the holder's wait within two of its requests", [c("a", latency=1.0), h("b", inflight=1, latency=1.0)], X, "b"),
    ("timed: a slow holder loses", [c("a", latency=0.1), h("b", latency=2.0)], X, "a"),
    ("a pod must hold every adapter named", [c("a"), h("b", inflight=1)], frozenset({"x", "y"}), "a"),
    ("no adapters named: the usual choice", [c("a"), h("b", inflight=1)], frozenset(), "a"),
    ("the best holder of several", [h("a", inflight=2), h("b", inflight=1), c("c")], X, "b"),
    ("an excluded holder is not chosen", [c("a"), h("b")], X, "a"),
]


@pytest.mark.parametrize(("label", "candidates", "adapters", "expected"), AFFINITY_CASES, ids=[c[0] for c in AFFINITY_CASES])
def test_a_pod_holding_the_requests_adapters_is_preferred_within_a_bound(label, candidates, adapters, expected):
    exclude = frozenset({"b"}) if label.startswith("an excluded") else frozenset()
    assert choose_backend(candidates, exclude, adapters).url == expected


def test_a_pod_sent_an_adapter_counts_as_holding_it_until_a_poll_says_otherwise_for_a_while():
    table = lease_table("http://a", "http://b")
    balancer = LeastExpectedWait(table)
    first = balancer.choose("m", adapters=X)
    first.release()
    for _ in range(20):  # sequential: each released before the next
        lease = balancer.choose("m", adapters=X)
        assert lease.url == first.url
        lease.release()
    assert balancer.choose("m").url != first.url  # without the adapter: the pod sent fewer requests
    pod = table.pods[first.url]
    pod.read_adapters({"m": frozenset()}, now=pod.adapter_hints[("m", "x")] + 1.0)  # a poll from before the load
    assert "x" in pod.adapters["m"]
    pod.read_adapters({"m": frozenset()}, now=pod.adapter_hints[("m", "x")] + 60.0)  # long after: the poll is right
    assert pod.adapters["m"] == frozenset()


def test_a_canary_split_sends_exactly_its_share_evenly_and_falls_back_when_a_revision_has_no_pod():
    credits: dict[str, float] = {}
    picks = [pick_revision({"old": 90, "new": 10}, credits, {"old", "new"}) for _ in range(400)]
    assert picks.count("new") == 40
    assert all(picks[i:i + 10].count("new") == 1 for i in range(0, 400, 10))  # one in each ten, not in bursts
    assert pick_revision({"old": 90, "new": 10}, {}, {"old"}) == "old"  # the canary has no ready pod yet
    assert pick_revision({"old": 0, "new": 100}, {}, {"old", "new"}) == "new"
    assert pick_revision({"old": 100}, {}, {"other"}) is None  # no weighted revision has a pod: any pod


def test_the_table_splits_a_models_requests_by_its_revisions_weights():
    table = BackendTable()
    table.sync({"m": ModelBackends(weights=(("new", 25), ("old", 75)), backends=(
        BackendRef("http://a", "a", revision="old"), BackendRef("http://b", "b", revision="old"),
        BackendRef("http://c", "c", revision="new")))})
    balancer = LeastExpectedWait(table)
    chosen = []
    for _ in range(100):
        lease = balancer.choose("m")
        chosen.append(lease.url)
        lease.release()
    assert chosen.count("http://c") == 25 and chosen.count("http://a") + chosen.count("http://b") == 75
    table.sync({"m": ModelBackends(backends=table_refs(table))})  # the rollout ended: no weights
    assert table.models["m"].weights == {}


def table_refs(table: BackendTable) -> tuple[BackendRef, ...]:
    return tuple(BackendRef(p.url, p.name, revision=p.revision) for p in table.pods.values())
