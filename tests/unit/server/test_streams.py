"""The event-stream bounds (tinyimg.http.streams), as a plain table: no server."""

import pytest

from tinyimg.core.errors import ApiError
from tinyimg.http.streams import StreamGate, StreamLimits


@pytest.mark.parametrize(("opened", "next_stream", "refused_for"), [
    ([("j1", "a")] * 2, ("j1", "b"), "for this job"),
    ([("j1", "a"), ("j2", "a"), ("j3", "a")], ("j4", "a"), "for this client"),
    ([("j1", "a"), ("j2", "b"), ("j3", "c"), ("j4", "d")], ("j5", "e"), "in this process"),
], ids=["per-job", "per-client", "in-all"])
def test_a_stream_past_a_bound_is_refused_naming_it(opened, next_stream, refused_for):
    gate = StreamGate(StreamLimits(per_job=2, per_client=3, total=4))
    for job, client in opened:
        gate.admit(job, client)
    with pytest.raises(ApiError) as err:
        gate.admit(*next_stream)
    assert (err.value.status, err.value.code) == (429, "too_many_streams") and err.value.retry_after
    assert refused_for in err.value.message


def test_released_places_are_given_back_once():
    gate = StreamGate(StreamLimits(per_job=1, per_client=1, total=1))
    ticket = gate.admit("j", "a")
    ticket.release()
    ticket.release()  # twice is once
    assert (gate.total, dict(gate.by_job), dict(gate.by_client)) == (0, {}, {})
    gate.admit("j", "a")  # the place is free again
