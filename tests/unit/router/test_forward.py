"""The forwarder's retry, error and relay rules. Upstreams here are handlers behind a stand-in for
httpcore's pool on purpose: they stage exact failures (refused, 503, timeout, a break after the
head) on demand; the same rules against real model-server processes are in
tests/integration/router and tests/hostile."""

import asyncio

import httpcore
import httpx
import pytest

from tinyimg.router.errors import RouterError
from tinyimg.router.forward import (
    CONNECTION_FAILURE,
    OTHER_FAILURE,
    TIMEOUT_FAILURE,
    UNFORWARDABLE,
    Attempt,
    Forwarder,
    classify_failure,
    drain_hold_seconds,
    read_error_code,
    should_retry,
)
from tinyimg.router.headers import build_upstream_headers, normalise_header
from tinyimg.router.metrics import build_router_metrics
from tinyimg.router.table import BackendRef, BackendTable, ModelBackends
from tinyimg.router.upstream import build_response_headers

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
        (httpcore.ConnectError("refused"), CONNECTION_FAILURE),
        (httpcore.ConnectTimeout("slow connect"), CONNECTION_FAILURE),
        (httpcore.RemoteProtocolError("Server disconnected without sending a response."), CONNECTION_FAILURE),
        (httpcore.ReadError("reset"), CONNECTION_FAILURE),
        (httpcore.ReadTimeout("no answer"), TIMEOUT_FAILURE),
        (httpcore.PoolTimeout("pool"), TIMEOUT_FAILURE),
        (httpcore.LocalProtocolError("Illegal header value b'bar '"), UNFORWARDABLE),
        (httpcore.UnsupportedProtocol("ftp"), OTHER_FAILURE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v,
)
def test_classify_failure(error, expected):
    assert classify_failure(error) == expected


def test_build_upstream_headers_drops_hop_by_hop_the_client_key_and_tenant_claims():
    headers = build_upstream_headers(
        [("Host", "router"), ("Authorization", "Bearer k"), ("Connection", "keep-alive"), ("Content-Type", "application/json"),
         ("Accept", "image/png"), ("X-Request-ID", "old"),
         # a client claiming a tenant (with a forged signature): only the router names tenants
         ("X-Tinyimg-Tenant", '{"name":"vip","priority":"interactive"}'), ("X-Tinyimg-Tenant-Signature", "0" * 64)],
        "rid-1",
        "10.0.0.9",
    )
    assert headers == [
        (b"Content-Type", b"application/json"), (b"Accept", b"image/png"), (b"x-request-id", b"rid-1"),
        (b"x-forwarded-for", b"10.0.0.9"),
    ]


def test_headers_named_in_connection_stop_at_the_router_both_ways():
    """RFC 9110 7.6.1: what Connection lists is for this hop only (a client naming X-Forwarded-For
    there must not make the router drop it either: the router's own is appended after)."""
    sent = build_upstream_headers(
        [("Connection", "close, X-Secret-Hop , x-other"), ("X-Secret-Hop", "1"), ("X-Other", "2"), ("Accept", "image/png")],
        "rid", None)
    assert sent == [(b"Accept", b"image/png"), (b"x-request-id", b"rid")]
    returned = build_response_headers(
        [(b"Connection", b"X-Pod-Hop"), (b"X-Pod-Hop", b"1"), (b"content-type", b"image/png")], "rid")
    assert returned == [(b"content-type", b"image/png"), (b"x-request-id", b"rid")]


def test_build_upstream_headers_appends_the_client_to_one_forwarded_for():
    headers = build_upstream_headers([("X-Forwarded-For", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8")], "r", "10.0.0.9")
    assert [v for k, v in headers if k.lower() == b"x-forwarded-for"] == [b"1.2.3.4, 5.6.7.8, 10.0.0.9"]


def test_build_upstream_headers_drops_the_job_headers_only_the_router_may_set():
    told = [("X-TinyIMG-Job-Id", "job_" + "e" * 32), ("x-tinyimg-public-job-id", "evil"),
            ("x-tinyimg-public-base-url", "http://evil.example"), ("Accept", "application/json")]
    assert build_upstream_headers(told, "r", None) == [(b"Accept", b"application/json"), (b"x-request-id", b"r")]


NORMALISED = [
    ("trailing space is not part of the value", ("X-Foo", "bar "), (b"X-Foo", b"bar")),
    ("leading tab too", ("X-Foo", "\tbar"), (b"X-Foo", b"bar")),
    ("inner spaces are kept", ("X-Foo", "a  b\tc"), (b"X-Foo", b"a  b\tc")),
    ("empty value", ("X-Foo", "   "), (b"X-Foo", b"")),
    # Starlette decodes header bytes as latin-1: the client's byte 0xe9 goes out unchanged.
    ("obs-text byte", ("X-Foo", "caf\xe9"), (b"X-Foo", b"caf\xe9")),
]


@pytest.mark.parametrize(("given", "expected"), [x[1:] for x in NORMALISED], ids=[x[0] for x in NORMALISED])
def test_normalise_header(given, expected):
    assert normalise_header(*given) == expected


REFUSED = [
    ("space in name", ("X Foo", "v")),
    ("colon in name", ("X:Foo", "v")),
    ("empty name", ("", "v")),
    ("NUL in value", ("X-Foo", "a\x00b")),
    ("CR LF in value", ("X-Foo", "a\r\nInjected: 1")),
    ("control character", ("X-Foo", "a\x01b")),
    ("DEL", ("X-Foo", "a\x7fb")),
]


@pytest.mark.parametrize("given", [x[1] for x in REFUSED], ids=[x[0] for x in REFUSED])
def test_normalise_header_refuses_what_http_does_not_allow_with_400(given):
    with pytest.raises(RouterError) as err:
        normalise_header(*given)
    assert (err.value.status, err.value.code) == (400, "unforwardable_request")
    assert repr(given[0]) in err.value.message


def test_every_header_normalise_accepts_is_sent_by_the_real_http_client():
    """Every single-byte variant around a value: what the rule lets through, h11 (httpx's HTTP/1.1
    writer) accepts too, so no accepted header can fail at send time."""
    import h11

    for byte in range(256):
        for value in (bytes([byte]), b"a" + bytes([byte]) + b"b", bytes([byte]) + b"x"):
            try:
                name, normalised = normalise_header("X-Probe", value.decode("latin-1"))
            except RouterError:
                continue
            h11.Request(method="POST", target="/", headers=[("host", "x"), (name, normalised)])


def test_build_response_headers_keeps_length_and_type_and_sets_one_request_id():
    raw = [(b"Content-Type", b"image/png"), (b"Content-Length", b"5"), (b"Date", b"x"), (b"Server", b"uvicorn"),
           (b"X-Request-ID", b"upstream"), (b"X-Seed", b"7")]
    assert build_response_headers(raw, "rid") == [
        (b"content-type", b"image/png"), (b"content-length", b"5"), (b"x-seed", b"7"), (b"x-request-id", b"rid")
    ]


class Body:
    """A streamed body, as a real connection gives."""

    def __init__(self, data: bytes):
        self.data = data

    async def __aiter__(self):
        yield self.data

    async def aclose(self):
        pass


def answer(status: int, data: bytes = b"", headers: dict[str, str] | None = None) -> httpcore.Response:
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return httpcore.Response(status, headers=raw, content=Body(data))


class HandlerPool:
    """Stands in for httpcore.AsyncConnectionPool: hands each request, as an httpx.Request (for its
    readable accessors), to ``handler``, which returns an httpcore.Response or raises."""

    def __init__(self, handler):
        self.handler = handler

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        content = b"".join([chunk async for chunk in request.stream])
        url = request.url
        as_httpx = httpx.Request(
            request.method.decode(), f"{url.scheme.decode()}://{url.host.decode()}{url.target.decode()}",
            headers=request.headers, content=content,
        )
        return self.handler(as_httpx)

    async def aclose(self):
        pass


def build_forwarder(handler, pods=("http://a", "http://b"), models=("m",)):
    table = BackendTable()
    table.sync({m: ModelBackends(backends=tuple(BackendRef(u, u) for u in pods)) for m in models})
    metrics = build_router_metrics()
    timeouts = {"connect": 1, "pool": 1, "read": 5, "write": 5}
    return Forwarder(HandlerPool(handler), table, metrics, retry_after=3, timeouts=timeouts), table, metrics


async def stays() -> dict:
    """An ASGI ``receive`` of a client that stays connected (the relay of a stream watches it)."""
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


async def read(response) -> tuple[int, bytes]:
    sent = []

    async def send(message):
        sent.append(message)

    await response({"type": "http"}, stays, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0


async def test_connection_error_is_retried_on_the_other_pod_and_marks_the_pod_unreachable():
    calls = []

    def handler(request):
        calls.append(str(request.url.host))
        if request.url.host == "a":
            raise httpcore.ConnectError("refused")
        return answer(200, b"image")

    forwarder, table, metrics = build_forwarder(handler)
    response = await forwarder.forward("m", "/generate", b"{}", [], "rid")
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
    assert await read(await forwarder.forward("m", "/generate", b"{}", [], "rid")) == (200, b"b")
    assert table.pods["http://a"].reachable  # a 503 is an answer: the pod is up


async def test_headers_built_per_pod_are_built_again_for_the_pod_of_the_retry():
    seen = []

    def handler(request):
        seen.append((request.url.host, request.headers["x-pod"], request.headers["x-common"]))
        return answer(503 if request.url.host == "a" else 202, b"{}")

    forwarder, _, _ = build_forwarder(handler)
    response = await forwarder.forward("m", "/v1/jobs", b"{}", lambda url: [(b"x-common", b"1"), (b"x-pod", url.encode())],
                                       "rid")
    assert (await read(response))[0] == 202 and response.origin == "http://b"
    assert seen == [("a", "http://a", "1"), ("b", "http://b", "1")]


async def test_a_request_the_client_refuses_to_send_is_400_and_leaves_every_pod_in_the_rotation():
    calls = []

    def handler(request):
        calls.append(request.url.host)
        raise httpcore.LocalProtocolError("Illegal header value b'bar '")

    forwarder, table, metrics = build_forwarder(handler)
    with pytest.raises(RouterError) as err:
        await forwarder.forward("m", "/generate", b"{}", [], "rid")
    assert (err.value.status, err.value.code) == (400, "unforwardable_request")
    assert calls == ["a"]  # not tried elsewhere: it would fail the same way
    assert [(p.reachable, p.inflight) for p in table.pods.values()] == [(True, 0), (True, 0)]
    assert value(metrics, "tinyimg_router_requests_total", model="m", outcome="unforwardable") == 1


async def test_draining_503_is_retried_and_the_draining_pod_is_held_out_of_the_rotation():
    calls = []
    draining = b'{"error": {"code": "draining", "message": "shutting down", "request_id": "r"}}'

    def handler(request):
        calls.append(request.url.host)
        if request.url.host == "a":
            return answer(503, draining, headers={"retry-after": "7"})
        return answer(200, b"image")

    forwarder, table, _ = build_forwarder(handler)
    assert await read(await forwarder.forward("m", "/generate", b"{}", [], "r1")) == (200, b"image")
    assert await read(await forwarder.forward("m", "/generate", b"{}", [], "r2")) == (200, b"image")
    assert calls == ["a", "b", "b"]  # the second request went straight to b
    assert table.ready_pods("m", now=table.pods["http://a"].hold_until - 0.1) == [table.pods["http://b"]]
    assert len(table.ready_pods("m", now=table.pods["http://a"].hold_until + 0.1)) == 2


async def test_draining_503_from_the_only_pod_is_relayed_with_its_body():
    body = b'{"error": {"code": "draining", "message": "shutting down"}}'
    forwarder, _, _ = build_forwarder(lambda r: answer(503, body, headers={"retry-after": "2"}), pods=("http://a",))
    assert await read(await forwarder.forward("m", "/generate", b"{}", [], "rid")) == (503, body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"code": "draining"}}', "draining"),
        (b'{"error": "x"}', None),
        (b"[1]", None),
        (b"not json", None),
        (b"", None),
    ],
    ids=["error-shape", "no-code", "not-an-object", "not-json", "empty"],
)
def test_read_error_code(body, expected):
    assert read_error_code(body) == expected


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 5.0), ("3", 3.0), ("0", 1.0), ("3600", 30.0), ("soon", 5.0), ("nan", 5.0)],
    ids=["default", "given", "at-least-one", "bounded", "not-a-number", "nan"],
)
def test_drain_hold_seconds(retry_after, expected):
    assert drain_hold_seconds(retry_after) == expected


async def test_unknown_model_names_share_one_metrics_label():
    forwarder, _, metrics = build_forwarder(lambda r: answer(200))
    for name in ("<script>", "x" * 500, "nope"):
        with pytest.raises(RouterError):
            await forwarder.forward(name, "/generate", b"{}", [], "rid")
    assert value(metrics, "tinyimg_router_requests_total", model="_unknown", outcome="unknown_model") == 3
    labels = {s.labels["model"] for f in metrics.registry.collect() for s in f.samples if "model" in s.labels}
    assert labels == {"_unknown"}


async def test_503_from_the_only_pod_is_relayed_with_its_body():
    forwarder, _, _ = build_forwarder(lambda r: answer(503, b"busy"), pods=("http://a",))
    assert await read(await forwarder.forward("m", "/generate", b"{}", [], "rid")) == (503, b"busy")


async def test_second_503_is_relayed_not_retried_again():
    calls = []

    def handler(request):
        calls.append(request.url.host)
        return answer(503, request.url.host.encode())

    forwarder, _, _ = build_forwarder(handler, pods=("http://a", "http://b", "http://c"))
    assert await read(await forwarder.forward("m", "/generate", b"{}", [], "rid")) == (503, b"b")
    assert calls == ["a", "b"]


async def test_connection_errors_on_every_pod_give_503_with_retry_after():
    def handler(request):
        raise httpcore.ConnectError("refused")

    forwarder, _, metrics = build_forwarder(handler)
    with pytest.raises(RouterError) as err:
        await forwarder.forward("m", "/generate", b"{}", [], "rid")
    assert (err.value.status, err.value.code, err.value.retry_after) == (503, "backend_unreachable", 3)
    assert value(metrics, "tinyimg_router_requests_total", model="m", outcome="unreachable") == 1


async def test_upstream_timeout_is_504_and_not_retried():
    calls = []

    def handler(request):
        calls.append(request.url.host)
        raise httpcore.ReadTimeout("slow")

    forwarder, _, _ = build_forwarder(handler)
    with pytest.raises(RouterError) as err:
        await forwarder.forward("m", "/generate", b"{}", [], "rid")
    assert (err.value.status, err.value.code) == (504, "upstream_timeout")
    assert calls == ["a"]


async def test_unknown_model_is_404_naming_the_known_ones():
    forwarder, _, _ = build_forwarder(lambda r: answer(200))
    with pytest.raises(RouterError) as err:
        await forwarder.forward("nope", "/generate", b"{}", [], "rid")
    assert err.value.status == 404
    assert "known models: m" in err.value.message


async def test_model_without_ready_pod_is_503_with_retry_after():
    forwarder, _, _ = build_forwarder(lambda r: answer(200), pods=())
    with pytest.raises(RouterError) as err:
        await forwarder.forward("m", "/generate", b"{}", [], "rid")
    assert (err.value.status, err.value.code, err.value.retry_after) == (503, "no_ready_backend", 3)


async def test_body_and_request_id_reach_the_backend_unchanged():
    seen = {}

    def handler(request):
        seen.update(
            body=request.content, rid=request.headers["x-request-id"], path=request.url.path,
            host=request.headers["host"], length=request.headers["content-length"],
        )
        return answer(200, b"ok", headers={"x-request-id": "rid-7"})

    forwarder, _, _ = build_forwarder(handler)
    response = await forwarder.forward("m", "/v1/images/generations", b'{"model":"m"}', [(b"x-request-id", b"rid-7")], "rid-7")
    assert (await read(response))[0] == 200
    assert seen == {"body": b'{"model":"m"}', "rid": "rid-7", "path": "/v1/images/generations", "host": "a", "length": "13"}


class BreakingBody(Body):
    """Sends one chunk, then the connection drops."""

    async def __aiter__(self):
        yield b"first-chunk"
        raise httpcore.ReadError("connection reset mid-body")


async def test_failure_after_the_response_started_is_never_retried():
    calls = []

    def handler(request):
        calls.append(request.url.host)
        return httpcore.Response(200, content=BreakingBody(b""))

    forwarder, table, metrics = build_forwarder(handler)
    response = await forwarder.forward("m", "/generate", b"{}", [], "rid")
    sent = []

    async def send(message):
        sent.append(message)

    with pytest.raises(httpcore.ReadError):
        await response({"type": "http"}, stays, send)
    assert calls == ["a"]
    assert [m.get("body") for m in sent[1:]] == [b"first-chunk"]
    assert value(metrics, "tinyimg_router_requests_total", model="m", outcome="aborted") == 1
    assert value(metrics, "tinyimg_router_retries_total", model="m") == 0
    assert table.pods["http://a"].inflight == 0


class Chunks(Body):
    def __init__(self, *chunks: bytes):
        self.chunks = chunks

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk


@pytest.mark.parametrize(
    ("headers", "chunks", "expected"),
    [
        pytest.param({"content-length": "6"}, (b"abc", b"def"), [(b"abc", True), (b"def", False)], id="length-known-last-chunk-ends-it"),
        pytest.param({}, (b"abc", b"def"), [(b"abc", True), (b"def", True), (b"", False)], id="no-length-an-empty-message-ends-it"),
        pytest.param({"content-length": "0"}, (), [(b"", False)], id="empty-body"),
    ],
)
async def test_relay_ends_the_body_exactly_once(headers, chunks, expected):
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    forwarder, _, _ = build_forwarder(lambda r: httpcore.Response(200, headers=raw, content=Chunks(*chunks)))
    response = await forwarder.forward("m", "/generate", b"{}", [], "rid")
    sent = []

    async def send(message):
        sent.append(message)

    await response({"type": "http"}, stays, send)
    assert [(m["body"], m["more_body"]) for m in sent[1:]] == expected


async def test_a_cancelled_forward_leaves_no_request_counted_in_flight():
    entered = asyncio.Event()

    class HangingPool(HandlerPool):
        async def handle_async_request(self, request):
            entered.set()
            await asyncio.sleep(60)

    forwarder, table, _ = build_forwarder(None)
    forwarder.pool = HangingPool(None)
    task = asyncio.create_task(forwarder.forward("m", "/generate", b"{}", [], "rid"))
    await entered.wait()
    assert sum(p.inflight for p in table.pods.values()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [p.inflight for p in table.pods.values()] == [0, 0]
