"""Issue 11 item 3: request heads are bounded on both services (431, JSON error shape, before any
auth), and a flood of huge heads leaves memory flat and the service serving. Real processes."""

import threading

import httpx
import pytest

from tests.support.hostile_edge import (
    assert_error_shape,
    edge_processes,
    exchange,
    read_rss_bytes,
    send_until_answered,
)

# What 8 connections streaming headers without end may make a process grow by, at most (measured:
# 1-2 MiB). Before the bound the router grew by ~520 MB and the server by ~500 MB for 64 MiB each.
FLOOD_RSS_BOUND = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_model_dirs):
    with edge_processes(tmp_path_factory.mktemp("edge-headers"), tiny_model_dirs) as (server, router):
        yield {"server": server, "router": router}


@pytest.mark.parametrize("service", ["server", "router"])
def test_one_oversized_header_is_431_in_the_error_shape(services, service):
    answer = exchange(services[service].url, b"GET /models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert_error_shape(answer, 431, "headers_too_large")
    assert answer.headers["connection"] == "close"


@pytest.mark.parametrize("service", ["server", "router"])
def test_too_many_small_headers_are_431(services, service):
    headers = {f"x-h{i}": "v" for i in range(150)}
    response = httpx.get(services[service].url + "/models", headers=headers, timeout=5)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("service", ["server", "router"])
def test_a_header_flood_is_cut_off_early_and_memory_stays_flat(services, service):
    proc = services[service]
    before = read_rss_bytes(proc.popen.pid)
    results = []

    def flood():
        # 64 MiB of header lines, 64 KiB at a time, unless the server answers first.
        line = b"X-Flood: " + b"f" * 65_000 + b"\r\n"
        results.append(send_until_answered(proc.url, [b"GET /generate HTTP/1.1\r\nHost: x\r\n", *[line] * 1024]))

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    grown = read_rss_bytes(proc.popen.pid) - before
    assert grown < FLOOD_RSS_BOUND, f"{service} grew by {grown / 2**20:.0f} MiB"
    for sent, answer in results:
        assert sent < 8 * 2**20, f"the server read {sent} bytes of headers before refusing"
        if answer is not None:  # it may close before the client reads; if it answered, it said 431
            assert_error_shape(answer, 431, "headers_too_large")
    assert httpx.get(proc.url + "/health", timeout=5).status_code == 200
