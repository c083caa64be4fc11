"""One test per uvicorn (and h11) internal that ``tinyimg.http.protocol.EdgeH11Protocol`` reads or
overrides, run against uvicorn's own ``H11Protocol``: a uvicorn release that renames or changes one
fails here, by name, before the edge misbehaves. ``server/pyproject.toml`` pins uvicorn to the
range these were read from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h11
import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState


class FakeTransport(asyncio.Transport):
    """What uvicorn asks of a socket's transport; it keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written, self.closed = bytearray(), False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.7", 5555)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def answer_204(scope, receive, send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"


@pytest.fixture
async def protocol() -> AsyncIterator[tuple[H11Protocol, FakeTransport, ServerState]]:
    config = Config(app=answer_204, log_config=None)
    config.load()
    state = ServerState()
    proto = H11Protocol(config=config, server_state=state, app_state={})
    transport = FakeTransport()
    proto.connection_made(transport)
    yield proto, transport, state
    proto.connection_lost(None)


async def test_conn_is_the_h11_connection_it_reads_events_from_and_may_be_replaced(protocol):
    proto, _, _ = protocol
    seen = []

    class Recording(h11.Connection):
        def next_event(self):
            event = super().next_event()
            seen.append(type(event).__name__)
            return event

    assert isinstance(proto.conn, h11.Connection)
    proto.conn = Recording(h11.SERVER)
    proto.data_received(HEAD + b"0123456789")
    assert seen[0] == "Request"


async def test_connections_is_the_server_state_set_holding_each_open_connection(protocol):
    proto, _, state = protocol
    assert proto.connections is state.connections and proto in state.connections


async def test_connection_made_sets_transport_client_loop_and_app(protocol):
    proto, transport, _ = protocol
    assert (proto.transport, proto.client) == (transport, ("127.0.0.7", 5555))
    assert proto.loop is asyncio.get_running_loop() and callable(proto.app)


async def test_handle_events_starts_a_new_cycle_when_a_head_is_complete(protocol):
    proto, _, _ = protocol
    assert proto.cycle is None
    proto.data_received(HEAD[:20])  # data_received hands every piece to handle_events
    assert proto.cycle is None
    proto.data_received(HEAD[20:] + b"01234")
    assert proto.cycle is not None


async def test_the_cycle_says_whether_the_body_is_still_coming_and_the_response_state(protocol):
    proto, _, _ = protocol
    proto.data_received(HEAD + b"01234")
    cycle = proto.cycle
    assert (cycle.more_body, cycle.response_started, cycle.response_complete, cycle.disconnected) == (True, False, False, False)
    assert isinstance(cycle.message_event, asyncio.Event)
    proto.data_received(b"56789")
    assert cycle.more_body is False


async def test_setting_disconnected_and_the_message_event_ends_the_apps_receive(protocol):
    proto, _, _ = protocol
    proto.data_received(HEAD + b"01234")
    cycle = proto.cycle
    await cycle.receive()  # the part that came
    waiting = asyncio.ensure_future(cycle.receive())
    await asyncio.sleep(0)
    cycle.disconnected = True
    cycle.message_event.set()
    assert (await asyncio.wait_for(waiting, 1))["type"] == "http.disconnect"


async def test_flow_read_paused_tells_whether_reading_is_paused(protocol):
    proto, _, _ = protocol
    assert proto.flow.read_paused is False
    proto.flow.pause_reading()
    assert proto.flow.read_paused is True


async def test_on_response_complete_runs_once_an_answer_is_sent(protocol, monkeypatch):
    proto, transport, _ = protocol
    calls = []
    original = proto.on_response_complete
    monkeypatch.setattr(proto, "on_response_complete", lambda: (calls.append(1), original()))
    proto.data_received(HEAD + b"0123456789")
    for _ in range(50):
        if calls:
            break
        await asyncio.sleep(0.01)
    assert calls == [1] and transport.written.startswith(b"HTTP/1.1 204")


async def test_send_400_response_answers_a_request_h11_refuses(protocol, monkeypatch):
    proto, _, _ = protocol
    messages = []
    monkeypatch.setattr(proto, "send_400_response", messages.append)
    proto.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    assert len(messages) == 1 and isinstance(messages[0], str)


def test_h11_bounds_an_incomplete_head_and_says_431_and_keeps_the_pending_bytes():
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64)
    assert conn._max_incomplete_event_size == 64  # read by RecordingConnection for a head that came whole
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert conn.next_event() is h11.NEED_DATA
    assert conn.trailing_data[0] == b"GET / HTTP/1.1\r\nHost: x\r\n"  # a head arriving too slowly
    conn.receive_data(b"X-Pad: " + b"a" * 100)
    with pytest.raises(h11.RemoteProtocolError) as refused:
        conn.next_event()
    assert refused.value.error_status_hint == 431
