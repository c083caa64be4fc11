import pytest

from tinyimg.router.balancer import Candidate, choose_backend


def c(url: str, inflight: int = 0, queue: int = 0, sent: int = 0) -> Candidate:
    return Candidate(url=url, inflight=inflight, queue_depth=queue, sent=sent)


CASES = [
    ("no candidates", [], frozenset(), None),
    ("single idle pod", [c("a")], frozenset(), "a"),
    ("fewest router in-flight wins", [c("a", inflight=2), c("b", inflight=1)], frozenset(), "b"),
    ("polled queue depth counts", [c("a", queue=3), c("b", inflight=2)], frozenset(), "b"),
    ("in-flight plus queue is the load", [c("a", inflight=1, queue=1), c("b", queue=3)], frozenset(), "a"),
    ("tie goes to the pod sent fewer requests", [c("a", sent=5), c("b", sent=4)], frozenset(), "b"),
    ("full tie goes to the lowest url", [c("b"), c("a")], frozenset(), "a"),
    ("excluded pod is skipped even when idle", [c("a"), c("b", inflight=9)], frozenset({"a"}), "b"),
    ("all excluded", [c("a"), c("b")], frozenset({"a", "b"}), None),
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
