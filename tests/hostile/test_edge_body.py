"""Issue 11 item 4: bodies are counted as they arrive, chunked ones too, and refused at the limit
(413, JSON error shape) on both services, without holding the body. Real processes."""

import httpx
import pytest

from tests.support.hostile_edge import (
    API_KEY,
    assert_error_shape,
    edge_processes,
    read_rss_bytes,
    send_until_answered,
)

LIMIT = 1_000_000  # both services' default max body
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
