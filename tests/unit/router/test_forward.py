"""The forwarder's retry, error and relay rules. Upstreams here are httpx.MockTransport handlers on
purpose: they stage exact failures (refused, 503, timeout, a break after the head) on demand; the
same rules against real model-server processes are in tests/integration/router."""

import httpx
import pytest

from tinyimg.router.errors import RouterError
from tinyimg.router.forward import (
    CONNECTION_FAILURE,
    TIMEOUT_FAILURE,
    Attempt,
    Forwarder,
    build_response_headers,
    build_upstream_headers,
    classify_failure,
    should_retry,
)
from tinyimg.router.metrics import build_router_metrics
from tinyimg.router.table import BackendRef, BackendTable, ModelBackends

RETRY_CASES = [
    ("connection failure on first try", 0, Attempt(failure=CONNECTION_FAILURE), True),
    ("503 on first try", 0, Attempt(status=503), True),
    ("timeout is not retried", 0, Attempt(failure=TIMEOUT_FAILURE), False),
    ("500 is not retried", 0, Attempt(status=500), False),
    ("429 is not retried", 0, Attempt(status=429), False),
    ("200 is not retried", 0, Attempt(status=200), False),
    ("never a second retry", 1, Attempt(failure=CONNECTION_FAILURE), False),
    ("never a second retry on 503", 1, Attempt(status=503), False),
]


@pytest.mark.parametrize(("index", "attempt", "expected"), [x[1:] for x in RETRY_CASES], ids=[x[0] for x in RETRY_CASES])
def test_should_retry(index, attempt, expected):
    assert should_retry(index, attempt) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused"), CONNECTION_FAILURE),
        (httpx.ConnectTimeout("slow connect"), CONNECTION_FAILURE),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), CONNECTION_FAILURE),
        (httpx.ReadError("reset"), CONNECTION_FAILURE),
        (httpx.ReadTimeout("no answer"), TIMEOUT_FAILURE),
        (httpx.PoolTimeout("pool"), TIMEOUT_FAILURE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v,
)
def test_classify_failure(error, expected):
    assert classify_failure(error) == expected


def test_build_upstream_headers_drops_hop_by_hop_and_the_client_key():
    headers = build_upstream_headers(
        [("Host", "router"), ("Authorization", "Bearer k"), ("Connection", "keep-alive"), ("Content-Type", "application/json"),
         ("Accept", "image/png"), ("X-Request-ID", "old")],
        "rid-1",
        "10.0.0.9",
    )
    assert headers == {"Content-Type": "application/json", "Accept": "image/png", "x-request-id": "rid-1", "x-forwarded-for": "10.0.0.9"}


def test_build_response_headers_keeps_length_and_type_and_sets_one_request_id():
    raw = [(b"Content-Type", b"image/png"), (b"Content-Length", b"5"), (b"Date", b"x"), (b"Server", b"uvicorn"),
           (b"X-Request-ID", b"upstream"), (b"X-Seed", b"7")]
    assert build_response_headers(raw, "rid") == [
        (b"content-type", b"image/png"), (b"content-length", b"5"), (b"x-seed", b"7"), (b"x-request-id", b"rid")
    ]


class Body(httpx.AsyncByteStream):
    """A streamed body, as a real transport gives (httpx reads plain ``content=`` eagerly)."""

    def __init__(self, data: bytes):
        self.data = data

    async def __aiter__(self):
        yield self.data


def answer(status: int, data: bytes = b"", **kwargs) -> httpx.Response:
    return httpx.Response(status, stream=Body(data), **kwargs)


def build_forwarder(handler, pods=("http://a", "http://b"), models=("m",)):
    table = BackendTable()
    table.sync({m: ModelBackends(backends=tuple(BackendRef(u, u) for u in pods)) for m in models})
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    metrics = build_router_metrics()
    return Forwarder(client, table, metrics, retry_after=3), table, metrics


async def read(response) -> tuple[int, bytes]:
    sent = []

    async def send(message):
        sent.append(message)

    await response({"type": "http"}, None, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0


async def test_connection_error_is_retried_on_the_other_pod_and_marks_the_pod_unreachable():
    calls = []

    def handler(request):
        calls.append(str(request.url.host))
        if request.url.host == "a":
            raise httpx.ConnectError("refused")
        return answer(200, b"image")

    forwarder, table, metrics = build_forwarder(handler)
    response = await forwarder.forward("m", "/generate", b"{}", {}, "rid")
    assert await read(response) == (200, b"image")
    assert calls == ["a", "b"]
    assert table.pods["http://a"].reachable is False
    assert [p.inflight for p in table.pods.values()] == [0, 0]
    assert value(metrics, "tinyimg_router_retries_total", model="m") == 1
    assert value(metrics, "tinyimg_router_requests_total", model="m", outcome="ok") == 1


async def test_503_is_retried_once_on_another_pod():
    def handler(request):
        return answer(503 if request.url.host == "a" else 200, request.url.host.encode())

    forwarder, table, _ = build_forwarder(handler)
    assert await read(await forwarder.forward("m", "/generate", b"{}", {}, "rid")) == (200, b"b")
    assert table.pods["http://a"].reachable  # a 503 is an answer: the pod is up


async def test_503_from_the_only_pod_is_relayed_with_its_body():
    forwarder, _, _ = build_forwarder(lambda r: answer(503, b"busy"), pods=("http://a",))
    assert await read(await forwarder.forward("m", "/generate", b"{}", {}, "rid")) == (503, b"busy")


async def test_second_503_is_relayed_not_retried_again():
    calls = []

    def handler(request):
        calls.append(request.url.host)
        return answer(503, request.url.host.encode())

    forwarder, _, _ = build_forwarder(handler, pods=("http://a", "http://b", "http://c"))
    assert await read(await forwarder.forward("m", "/generate", b"{}", {}, "rid")) == (503, b"b")
    assert calls == ["a", "b"]


async def test_connection_errors_on_every_pod_give_503_with_retry_after():
    def handler(request):
        raise httpx.ConnectError("refused")

    forwarder, _, metrics = build_forwarder(handler)
    with pytest.raises(RouterError) as err:
        await forwarder.forward("m", "/generate", b"{}", {}, "rid")
    assert (err.value.status, err.value.code, err.value.retry_after) == (503, "backend_unreachable", 3)
    assert value(metrics, "tinyimg_router_requests_total", model="m", outcome="unreachable") == 1


async def test_upstream_timeout_is_504_and_not_retried():
    calls = []

    def handler(request):
        calls.append(request.url.host)
        raise httpx.ReadTimeout("slow")

    forwarder, _, _ = build_forwarder(handler)
    with pytest.raises(RouterError) as err:
        await forwarder.forward("m", "/generate", b"{}", {}, "rid")
    assert (err.value.status, err.value.code) == (504, "upstream_timeout")
    assert calls == ["a"]


async def test_unknown_model_is_404_naming_the_known_ones():
    forwarder, _, _ = build_forwarder(lambda r: answer(200))
    with pytest.raises(RouterError) as err:
        await forwarder.forward("nope", "/generate", b"{}", {}, "rid")
    assert err.value.status == 404
    assert "known models: m" in err.value.message


async def test_model_without_ready_pod_is_503_with_retry_after():
    forwarder, _, _ = build_forwarder(lambda r: answer(200), pods=())
    with pytest.raises(RouterError) as err:
        await forwarder.forward("m", "/generate", b"{}", {}, "rid")
    assert (err.value.status, err.value.code, err.value.retry_after) == (503, "no_ready_backend", 3)


async def test_body_and_request_id_reach_the_backend_unchanged():
    seen = {}

    def handler(request):
        seen.update(body=request.content, rid=request.headers["x-request-id"], path=request.url.path)
        return answer(200, b"ok", headers={"x-request-id": "rid-7"})

    forwarder, _, _ = build_forwarder(handler)
    response = await forwarder.forward("m", "/v1/images/generations", b'{"model":"m"}', {"x-request-id": "rid-7"}, "rid-7")
    assert (await read(response))[0] == 200
    assert seen == {"body": b'{"model":"m"}', "rid": "rid-7", "path": "/v1/images/generations"}


class BreakingBody(httpx.AsyncByteStream):
    """Sends one chunk, then the connection drops."""

    async def __aiter__(self):
        yield b"first-chunk"
        raise httpx.ReadError("connection reset mid-body")


async def test_failure_after_the_response_started_is_never_retried():
    calls = []

    def handler(request):
        calls.append(request.url.host)
        return httpx.Response(200, stream=BreakingBody())

    forwarder, table, metrics = build_forwarder(handler)
    response = await forwarder.forward("m", "/generate", b"{}", {}, "rid")
    sent = []

    async def send(message):
        sent.append(message)

    with pytest.raises(httpx.ReadError):
        await response({"type": "http"}, None, send)
    assert calls == ["a"]
    assert [m.get("body") for m in sent[1:]] == [b"first-chunk"]
    assert value(metrics, "tinyimg_router_requests_total", model="m", outcome="aborted") == 1
    assert value(metrics, "tinyimg_router_retries_total", model="m") == 0
    assert table.pods["http://a"].inflight == 0
