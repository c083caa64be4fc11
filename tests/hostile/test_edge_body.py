"""Issue 11 item 4: bodies are counted as they arrive, chunked ones too, and refused at the limit
(413, JSON error shape) on both services, without holding the body. Real processes."""

import contextlib
import time

import httpx
import pytest

from tests.support.hostile_edge import (
    API_KEY,
    assert_error_shape,
    connect,
    edge_processes,
    read_rss_bytes,
    send_until_answered,
)
from tinyimg.http.limits import EdgeLimits

LIMIT = EdgeLimits.max_body_bytes  # both services' default max body
# Before, the router read 300 MiB into memory (575 MB resident) before its size check.
CHUNKED_RSS_BOUND = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_model_dirs):
    with edge_processes(tmp_path_factory.mktemp("edge-body"), tiny_model_dirs) as (server, router):
        yield {"server": server, "router": router}


def chunked_upload(total_mib: int):
    head = (
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n" % 2**20 + b"x" * 2**20 + b"\r\n"
    return [head, *[chunk] * total_mib, b"0\r\n\r\n"]


@pytest.mark.parametrize("service", ["server", "router"])
def test_a_huge_chunked_body_is_refused_at_the_limit_without_being_held(services, service):
    proc = services[service]
    before = read_rss_bytes(proc.popen.pid)
    sent, answer = send_until_answered(proc.url, chunked_upload(300), timeout=30)
    grown = read_rss_bytes(proc.popen.pid) - before
    assert answer is not None
    assert_error_shape(answer, 413, "payload_too_large")
    # Socket buffers take a few MiB beyond what the server read; 300 MiB would mean it read it all.
    assert sent < 32 * 2**20, f"{sent / 2**20:.0f} MiB sent before the refusal"
    assert grown < CHUNKED_RSS_BOUND, f"{service} grew by {grown / 2**20:.0f} MiB"


@pytest.mark.parametrize("service", ["server", "router"])
def test_a_declared_length_over_the_limit_is_refused_before_the_body(services, service):
    response = httpx.post(
        services[service].url + "/generate", content=b"{}" + b" " * LIMIT,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}, timeout=10,
    )
    assert response.status_code == 413
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


# Small bounds so the budget is reached with a few uploads: 1 MB each, 3 MB for all at once.
BUDGET = {"each": 1_000_000, "total": 3_000_000}


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory, tiny_model_dirs):
    with edge_processes(
        tmp_path_factory.mktemp("edge-budget"), tiny_model_dirs,
        router_args=["--max-body-bytes", str(BUDGET["each"]), "--max-body-bytes-total", str(BUDGET["total"])],
        server_options={"maxBodyBytes": BUDGET["each"], "maxBodyBytesTotal": BUDGET["total"]},
    ) as (server, router):
        yield {"server": server, "router": router}


def upload_head(length: int) -> bytes:
    return (b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n" % length)


@pytest.mark.parametrize("service", ["server", "router"])
def test_bodies_held_at_once_are_bounded_as_a_whole(budgeted, service):
    """Three slow uploads of 0.8 MB each are held (2.4 MB); a fourth that would pass 3 MB is
    refused with 503 server_busy and Retry-After; once the three leave, the same upload is taken."""
    url, size = budgeted[service].url, 800_000
    with contextlib.ExitStack() as stack:
        for _ in range(3):
            sock = stack.enter_context(connect(url))
            sock.sendall(upload_head(size + 1) + b" " * size)  # one byte short: the body stays held
        _, answer = send_until_answered(url, [upload_head(size), *[b" " * 100_000] * 8], timeout=20)
        assert answer is not None
        assert_error_shape(answer, 503, "server_busy")
        assert answer.headers["retry-after"] == "1"
    # The three left (closed): their bytes are released as the server notices, and the same upload
    # then reaches the app (a body of spaces is no JSON: 422 or 400, not 503).
    deadline = time.monotonic() + 10
    while True:
        _, answer = send_until_answered(url, [upload_head(size), *[b" " * 100_000] * 8], timeout=20)
        assert answer is not None
        if answer.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.status in (400, 422), answer
