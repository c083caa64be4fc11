"""The forwarder's pool over real loopback HTTP: connections are reused, one per concurrent
request, given back only when their body is done, and a connection the pod closed is not reused."""

import asyncio

import httpcore
import pytest

from tinyimg.http.limits import EdgeLimits
from tinyimg.router.forward import POOL_KEEPALIVE_SECONDS, build_forward_pool
from tinyimg.router.pool import ForwardPool


@pytest.fixture()
async def pod():
    """A tiny HTTP/1.1 server that counts connections; path /close answers and closes."""
    connections = []

    async def serve(reader, writer):
        connections.append(writer)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            close = b" /close " in head.split(b"\r\n", 1)[0]
            body = b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n" + (b"connection: close\r\n" if close else b"") + b"\r\n" + body)
            await writer.drain()
            if close:
                writer.close()
                break

    async def guarded(reader, writer):
        try:
            await serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", connections
    server.close()


async def fetch(pool, url, path="/"):
    response = await pool.handle_async_request(httpcore.Request(b"GET", (url + path).encode(), headers=[(b"host", b"pod")]))
    body = b"".join([chunk async for chunk in response.stream])
    await response.aclose()
    return response.status, body


async def test_connections_are_reused_and_one_is_made_per_concurrent_request(pod):
    url, connections = pod
    pool = ForwardPool()
    assert [await fetch(pool, url) for _ in range(5)] == [(200, b"ok")] * 5
    assert len(connections) == 1  # sequential: one keep-alive connection
    await asyncio.gather(*(fetch(pool, url) for _ in range(4)))
    assert len(connections) == 4  # four at once: the idle one and three new
    assert sum(len(idle) for idle in pool.idle.values()) == 4 and not pool.busy
    await pool.aclose()
    assert not pool.idle


async def test_a_connection_the_pod_closed_is_not_reused(pod):
    url, connections = pod
    pool = ForwardPool()
    assert await fetch(pool, url, "/close") == (200, b"ok")
    await asyncio.sleep(0.05)  # the pod's close arrives
    assert await fetch(pool, url) == (200, b"ok")
    assert len(connections) == 2
    await pool.aclose()


async def test_an_unread_body_does_not_give_its_connection_back_for_reuse(pod):
    url, connections = pod
    pool = ForwardPool()
    response = await pool.handle_async_request(httpcore.Request(b"GET", (url + "/").encode(), headers=[(b"host", b"pod")]))
    await response.aclose()  # closed before its body was read: httpcore closes the connection
    assert not any(pool.idle.values()) and not pool.busy
    assert await fetch(pool, url) == (200, b"ok")
    assert len(connections) == 2
    await pool.aclose()


async def test_a_refused_connection_raises_and_leaves_nothing_behind():
    pool = ForwardPool()
    with pytest.raises(httpcore.ConnectError):
        await fetch(pool, "http://127.0.0.1:9")
    assert not pool.busy and not any(pool.idle.values())


async def test_an_idle_connection_past_its_expiry_is_not_reused(pod):
    url, connections = pod
    pool = ForwardPool(keepalive_expiry=0.2)
    assert await fetch(pool, url) == (200, b"ok")
    assert await fetch(pool, url) == (200, b"ok")
    assert len(connections) == 1
    await asyncio.sleep(0.3)
    assert await fetch(pool, url) == (200, b"ok")
    assert len(connections) == 2
    await pool.aclose()


def test_the_router_drops_idle_connections_before_the_model_server_would_close_them():
    """Else a request can go out on a connection the pod is closing at that moment (it fails, and
    the forwarder takes the pod out of the rotation)."""
    assert build_forward_pool().keepalive_expiry == POOL_KEEPALIVE_SECONDS
    assert 0 < POOL_KEEPALIVE_SECONDS <= EdgeLimits().keep_alive_timeout - 1.0


def open_sockets_to(port: int) -> int:
    """This process's TCP sockets to ``port`` still open (any state, CLOSE_WAIT included)."""
    import psutil

    return sum(1 for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port)


async def test_the_sweep_closes_connections_the_pod_closed_and_forgets_pods_that_left(pod):
    url, connections = pod
    port = int(url.rsplit(":", 1)[1])
    pool = ForwardPool()
    await asyncio.gather(*(fetch(pool, url) for _ in range(3)))
    assert sum(len(idle) for idle in pool.idle.values()) == 3
    for writer in connections:  # the pod ends its idle connections (its keep-alive timeout)
        writer.close()
    await asyncio.sleep(0.1)
    assert open_sockets_to(port) == 3  # left in CLOSE_WAIT by a pool that never looks
    assert await pool.sweep(lambda origin: True) == 3
    assert pool.idle == {} and open_sockets_to(port) == 0
    await fetch(pool, url)  # a pod that left the table: its idle connections go at the next sweep
    assert await pool.sweep(lambda origin: False) == 1 and pool.idle == {}
    await pool.aclose()
