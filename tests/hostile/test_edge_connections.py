"""Issue 11 item 5: slow and idle connections are closed (header-read, body-read and keep-alive
timeouts) and open connections are bounded per process, with a clear JSON refusal past it.

Real uvicorn on loopback, with the protocol and options ``tinyimg serve`` and ``tinyimg router``
use (``tinyimg.http.server``), in this process so the timeouts can be short; both apps."""

import contextlib
import socket
import time

import httpx
import pytest

from tests.support.fake_engine import FakeEngine
from tests.support.hostile_edge import assert_error_shape, connect, parse_answer, read_all
from tinyimg.api.app import create_app
from tinyimg.http.limits import EdgeLimits, build_connection_limit
from tinyimg.http.protocol import PROBE_HEADROOM
from tinyimg.router.app import create_router_app
from tinyimg.router.discovery_static import StaticDiscovery
from tinyimg.router.settings import RouterSettings
from tinyimg.serve import BackgroundServer
from tinyimg.spec import parse_config

SHORT = EdgeLimits(header_timeout=1.0, body_timeout=1.0, keep_alive_timeout=1.0, max_connections=8)
CONFIG = parse_config({"models": [{"name": "m", "family": "sdxl", "source": "org/m"}]})


def build_app(service: str):
    if service == "server":
        return create_app(CONFIG, FakeEngine(CONFIG))
    return create_router_app(RouterSettings(), StaticDiscovery({"m": ["http://127.0.0.1:9"]}))


@pytest.fixture(params=["server", "router"])
def served(request):
    with BackgroundServer(build_app(request.param), limits=SHORT) as server:
        yield server


def closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    started = time.monotonic()
    data = read_all(sock, seconds)
    return time.monotonic() - started, data


def test_a_head_dripped_byte_by_byte_is_cut_off_with_408(served):
    with connect(served.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        answer = b""
        # One byte every 0.2 s: each restarted uvicorn's keep-alive timer, so this never ended.
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            answer += read_all(sock, 0.2)
            if answer:
                break
        elapsed = time.monotonic() - started
    assert elapsed < SHORT.header_timeout + 1.5
    assert_error_shape(parse_answer(answer), 408, "request_timeout")


def test_an_idle_connection_is_closed_after_the_header_timeout(served):
    with connect(served.url) as sock:
        elapsed, data = closed_within(sock, 5)
    assert data == b""
    assert elapsed < SHORT.header_timeout + 1.5


def test_a_kept_alive_connection_is_closed_when_idle(served):
    with connect(served.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_all(sock, 0.5)
        assert first.startswith(b"HTTP/1.1 200")
        elapsed, rest = closed_within(sock, 5)
    assert rest == b"" and elapsed < SHORT.keep_alive_timeout + 1.5


def test_a_stalled_body_is_refused_with_408(served):
    with connect(served.url) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\": ")
        elapsed, data = closed_within(sock, 5)
    assert elapsed < SHORT.body_timeout + 1.5
    assert_error_shape(parse_answer(data), 408, "request_timeout")


def ask(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return read_all(sock, 3)


@pytest.mark.parametrize("service", ["server", "router"])
def test_connections_past_the_bound_are_refused_with_a_json_503_but_probes_still_pass(service):
    # Idle connections stay for the whole test (a long head timeout), so the counts hold still.
    limits = EdgeLimits(header_timeout=30.0, max_connections=8)
    with BackgroundServer(build_app(service), limits=limits) as served, contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(served.url)) for _ in range(SHORT.max_connections)]
        time.sleep(0.2)  # let the server accept them all
        # Past the bound a client request is refused in the JSON shape...
        with connect(served.url) as extra:
            answer = parse_answer(ask(extra, "/models"))
        assert_error_shape(answer, 503, "too_many_connections")
        assert answer.headers["retry-after"] == "1"
        # ...while the kubelet's probes still get through (their own headroom): a process full of
        # clients is not restarted for being alive.
        for path in ("/health", "/health/ready"):
            with connect(served.url) as probe:
                assert parse_answer(ask(probe, path)).status in (200, 503 if path == "/health/ready" else 200)
        with connect(served.url) as probe:
            assert parse_answer(ask(probe, "/health")).status == 200
        # Past the headroom too, a connection is refused at once, before any request.
        beyond = [stack.enter_context(connect(served.url)) for _ in range(PROBE_HEADROOM)]
        time.sleep(0.2)
        with connect(served.url) as extra:
            assert_error_shape(parse_answer(read_all(extra, 3)), 503, "too_many_connections")
        for sock in [*held, *beyond]:
            sock.close()
        time.sleep(0.2)
        assert httpx.get(served.url + "/models", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("wanted", "fd_limit", "bound"),
    [(1000, 256, 192), (1000, 1_048_576, 1000), (10, 20, 1)],
    ids=["fd-limit-binds", "configured-binds", "never-zero"],
)
def test_the_connection_bound_leaves_file_descriptors_for_the_process(wanted, fd_limit, bound):
    assert build_connection_limit(wanted, fd_limit) == bound
