"""The edge's pure parts (tinyimg.http): the request-id rule, the raw answers the protocol writes
before any app runs, the head measure, and the uvicorn options both services run with."""

import json

import h11
import pytest

from tinyimg.http.context import read_request_id
from tinyimg.http.limits import EdgeLimits
from tinyimg.http.protocol import EdgeH11Protocol, build_raw_error, measure_head
from tinyimg.http.server import build_server_options


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-DEF_1.2", True), ("a" * 64, True), ("a" * 65, False), ("has space", False), ("a/b", False),
     ("caf\xe9", False), ("", False), (None, False)],
    ids=["plain", "64-chars", "65-chars", "space", "slash", "non-ascii", "empty", "absent"],
)
def test_a_client_request_id_is_kept_only_when_short_and_safe(given, kept):
    rid = read_request_id(given)
    assert (rid == given) is kept
    assert len(rid) <= 64


def test_a_raw_error_is_a_complete_closing_answer_in_the_error_shape():
    raw = build_raw_error(431, "headers_too_large", "too big", "rid-1", retry_after=0.2)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(raw)
    response, data = conn.next_event(), conn.next_event()
    headers = dict(response.headers)
    assert response.status_code == 431
    assert (headers[b"connection"], headers[b"x-request-id"], headers[b"retry-after"]) == (b"close", b"rid-1", b"1")
    assert json.loads(data.data) == {"error": {"code": "headers_too_large", "message": "too big", "request_id": "rid-1"}}


def test_the_head_measure_counts_request_line_and_headers():
    event = h11.Request(method="GET", target="/models", headers=[("Host", "x"), ("X-A", "b" * 100)])
    raw = b"GET /models HTTP/1.1\r\nhost: x\r\nx-a: " + b"b" * 100 + b"\r\n\r\n"
    assert measure_head(event) == len(raw)


def test_server_options_trust_no_forwarded_headers_by_default():
    options = build_server_options(EdgeLimits(), fd_limit=1 << 20)
    assert options["proxy_headers"] is False
    assert issubclass(options["http"], EdgeH11Protocol)
    assert options["http"].limits.max_connections == 1000
    trusted = build_server_options(EdgeLimits(), ["10.0.0.0/8"], fd_limit=1 << 20)
    assert (trusted["proxy_headers"], trusted["forwarded_allow_ips"]) == (True, ["10.0.0.0/8"])


def test_server_options_bound_connections_by_the_fd_limit():
    options = build_server_options(EdgeLimits(max_connections=5000), fd_limit=1024)
    assert options["http"].limits.max_connections == 1024 - 64
    assert options["h11_max_incomplete_event_size"] == EdgeLimits().max_header_bytes
