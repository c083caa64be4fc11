"""Forwarding a generation request to the least-loaded ready pod, and streaming its answer back.

Retry rule: at most one retry, on another pod, and only when nothing of a response has reached the
client: the connection failed (refused, reset, closed before any response) or the pod answered
503 (not ready, or ``draining`` while it shuts down). Once the upstream head is passed on, a
failure aborts the client's connection instead: the router never retries after a response has
started.

"The backend failed" and "this request cannot be forwarded" are kept apart: only a connection
failure takes a pod out of the rotation. A request the HTTP client refuses to send (a header it
rejects) is answered 400 ``unforwardable_request`` and says nothing about the pod; headers are
normalised first (surrounding whitespace is not part of a field value, RFC 9110 5.5) so that
harmless variants are forwarded rather than refused.

The forwarder speaks to pods through httpcore's connections directly, kept alive and reused by
``tinyimg.router.pool`` (httpcore's own pool probed every idle connection on every request): httpx's layer above it (URL and header models, cookies, auth and redirect handling) cost
about a third of the router's per-request time, and a proxy needs none of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import anyio
import httpcore
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tinyimg.core.jobs import JOB_HEADERS
from tinyimg.http.limits import EdgeLimits
from tinyimg.router.balancer import Balancer, Lease, LeastExpectedWait
from tinyimg.router.errors import RouterError
from tinyimg.router.metrics import UNKNOWN_MODEL_LABEL, RouterMetrics
from tinyimg.router.pool import ForwardPool
from tinyimg.router.table import BackendTable, PodState

if TYPE_CHECKING:
    from collections.abc import AsyncIterable

log = logging.getLogger("tinyimg.router.forward")

MAX_ATTEMPTS = 2
POOL_KEEPALIVE_SECONDS = EdgeLimits.keep_alive_timeout - 1.0
CONNECTION_FAILURE = "connection"  # the pod failed: refused, reset, closed before any response
TIMEOUT_FAILURE = "timeout"  # the pod took too long: never retried (it may still be working on it)
UNFORWARDABLE = "unforwardable"  # this request cannot be sent by the HTTP client: the pod is fine
OTHER_FAILURE = "other"  # anything else the client raised: fail this request, keep the pod
# Headers that describe one connection, not the message: never passed through a proxy.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)
# The client's key is for the router; the router's own server adds date and server. The job
# headers (a job's ids and base URL) are the router's to set: a client's would be believed by the pod.
NOT_FORWARDED_REQUEST = HOP_BY_HOP | {"authorization", "x-request-id"} | JOB_HEADERS
NOT_RETURNED_RESPONSE = (HOP_BY_HOP - {"content-length"}) | {"date", "server"}
# RFC 9110 5.1/5.5: a field name is a token; a field value is visible ASCII or obs-text (0x80-0xff)
# with single spaces/tabs inside, no control characters. h11 (httpcore's HTTP/1.1 layer) refuses
# anything else, so anything else is refused here, before a pod is involved.
FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?")
# A draining pod is out of the rotation this long unless its 503 says how long (Retry-After).
DRAIN_HOLD_SECONDS = 5.0
MAX_DRAIN_HOLD_SECONDS = 30.0
MAX_ERROR_BODY_BYTES = 64 * 1024  # a 503 body is read to see its code; a real one is ~200 bytes


@dataclass(frozen=True)
class Attempt:
    """How one try at one pod ended before anything was sent to the client."""

    status: int | None = None  # the upstream status, when a response head came back
    failure: str | None = None  # one of the *_FAILURE kinds above, when none did


def classify_failure(err: Exception) -> str:
    """What a transport error (httpcore's) means for the pod and for retrying."""
    if isinstance(err, httpcore.LocalProtocolError):
        return UNFORWARDABLE  # h11 refused to write our own request: nothing reached the pod
    if isinstance(
        err, httpcore.ConnectTimeout | httpcore.ConnectError | httpcore.RemoteProtocolError | httpcore.ReadError | httpcore.WriteError
    ):
        return CONNECTION_FAILURE
    if isinstance(err, httpcore.TimeoutException):
        return TIMEOUT_FAILURE  # the pod is working on it: retrying would run it twice and wait twice
    return OTHER_FAILURE


def should_retry(attempt_index: int, attempt: Attempt) -> bool:
    """Retry (on another pod) only after a connection failure or a 503, and only once."""
    if attempt_index + 1 >= MAX_ATTEMPTS:
        return False
    return attempt.failure == CONNECTION_FAILURE or attempt.status == 503


def normalise_header(name: str, value: str) -> tuple[bytes, bytes]:
    """The header as bytes, surrounding whitespace dropped; RouterError 400 when no HTTP/1.1 client
    may send it. Starlette decoded the bytes as latin-1, so encoding back gives the client's bytes."""
    raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1").strip(b" \t")
    if not FIELD_NAME.fullmatch(raw_name):
        raise RouterError(400, "unforwardable_request", f"header {name!r}: not a valid HTTP header name")
    if not FIELD_VALUE.fullmatch(raw_value):
        raise RouterError(
            400, "unforwardable_request", f"header {name!r}: value has characters HTTP does not allow (control characters)"
        )
    return raw_name, raw_value


def read_connection_names(headers: list[tuple[str, str]] | list[tuple[bytes, bytes]]) -> frozenset[str]:
    """The header names a message's ``Connection`` header lists: hop-by-hop for this message only
    (RFC 9110 7.6.1), so a proxy drops them like the fixed hop-by-hop set."""
    names: set[str] = set()
    for key, value in headers:
        k = key.decode("latin-1") if isinstance(key, bytes) else key
        if k.lower() == "connection":
            v = value.decode("latin-1") if isinstance(value, bytes) else value
            names.update(n.strip().lower() for n in v.split(",") if n.strip())
    return frozenset(names)


def build_upstream_headers(
    headers: list[tuple[str, str]], request_id: str, client_host: str | None
) -> list[tuple[bytes, bytes]]:
    """The headers to send a pod: end-to-end ones only (not those the client's Connection header
    names), normalised (see ``normalise_header``), the router's request id, and the client's
    address appended to X-Forwarded-For."""
    dropped = NOT_FORWARDED_REQUEST | read_connection_names(headers)
    out = [normalise_header(k, v) for k, v in headers if k.lower() not in dropped]
    out.append((b"x-request-id", request_id.encode("latin-1")))
    if client_host:
        prior = [v for k, v in out if k.lower() == b"x-forwarded-for"]
        out = [(k, v) for k, v in out if k.lower() != b"x-forwarded-for"]
        address = client_host.encode("latin-1")
        out.append((b"x-forwarded-for", b", ".join([*prior, address])))
    return out


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase), decoded."""
    return next((v.decode("latin-1") for k, v in headers if k.lower() == name), None)


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body length (h11 has checked it is one valid number), else None."""
    value = header_value(headers, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


def build_response_headers(raw: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    dropped = NOT_RETURNED_RESPONSE | read_connection_names(raw)
    out = [(k.lower(), v) for k, v in raw if k.lower().decode("latin-1") not in dropped]
    out = [(k, v) for k, v in out if k != b"x-request-id"]
    out.append((b"x-request-id", request_id.encode("latin-1")))
    return out


def read_error_code(body: bytes) -> str | None:
    """``error.code`` of a JSON error body (both services' shape), else None."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def drain_hold_seconds(retry_after: str | None) -> float:
    """How long to keep a draining pod out of the rotation: its Retry-After (bounded), else a default."""
    try:
        seconds = float(retry_after) if retry_after is not None else DRAIN_HOLD_SECONDS
    except ValueError:
        seconds = DRAIN_HOLD_SECONDS
    if not math.isfinite(seconds):
        seconds = DRAIN_HOLD_SECONDS
    return min(max(seconds, 1.0), MAX_DRAIN_HOLD_SECONDS)


class UpstreamResponse(Response):
    """A response that relays an upstream response's bytes unchanged (no re-encoding), and calls
    ``on_done(completed)`` exactly once, however the relay ends (client gone included). ``body``:
    the upstream body when it was already read (a 503 whose code was looked at)."""

    origin = ""  # the pod that answered, as the table names it (set by the forwarder)

    def __init__(
        self, upstream: httpcore.Response, request_id: str, on_done: Callable[[bool], None], body: bytes | None = None
    ):
        self.upstream, self.on_done, self.read_body = upstream, on_done, body
        self.status_code = upstream.status
        self.background = None
        self.raw_headers = build_response_headers(upstream.headers, request_id)

    def also_on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` too when the relay ends, however it ends."""
        first = self.on_done

        def both(completed: bool) -> None:
            try:
                first(completed)
            finally:
                callback()
        self.on_done = both

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completed = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self.read_body is not None:
                await send({"type": "http.response.body", "body": self.read_body, "more_body": False})
            elif content_length(self.upstream.headers) is None:
                # A stream (an event stream lasts as long as its job): uvicorn drops what is sent
                # after the client left without saying so, so watch for the leaving and stop
                # reading the pod at once, rather than holding its stream to the job's end.
                relayed, failure = False, None
                async with anyio.create_task_group() as group:
                    async def relay_then_stop() -> None:
                        nonlocal relayed, failure
                        try:
                            await self._relay(send)
                            relayed = True
                        except Exception as err:  # raised below as itself, not as an ExceptionGroup
                            failure = err
                        group.cancel_scope.cancel()
                    group.start_soon(relay_then_stop)
                    await _wait_for_disconnect(receive)
                    group.cancel_scope.cancel()
                if failure is not None:
                    raise failure
                completed = relayed
            else:
                await self._relay(send)
                completed = True
        finally:
            await self.upstream.aclose()
            self.on_done(completed)

    async def _relay(self, send: Send) -> None:
        # With a Content-Length, the chunk that completes it is the last: one message less
        # through the middleware stack per response. Without one (chunked, a stream), each
        # chunk is passed on as it comes and an empty message ends the body.
        left, ended = content_length(self.upstream.headers), False
        async for chunk in cast("AsyncIterable[bytes]", self.upstream.stream):  # an async pool's stream
            if left is not None:
                left -= len(chunk)
            ended = left == 0
            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if not ended:  # no length, or an empty body
            await send({"type": "http.response.body", "body": b"", "more_body": False})


    async def read_all(self) -> bytes:
        """The whole body, for a route that rewrites it instead of relaying it (a job's JSON)."""
        completed = False
        try:
            stream = cast(AsyncIterable[bytes], self.upstream.stream)  # the async pool's stream
            body = self.read_body if self.read_body is not None else b"".join([c async for c in stream])
            completed = True
            return body
        finally:
            await self.upstream.aclose()
            self.on_done(completed)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_bounded(upstream: httpcore.Response, limit: int) -> bytes:
    """The raw upstream body, at most ``limit`` bytes (more is cut: only its error code matters)."""
    chunks, size = [], 0
    async for chunk in cast("AsyncIterable[bytes]", upstream.stream):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def outcome_for_status(status: int) -> str:
    if status < 400:
        return "ok"
    return "upstream_client_error" if status < 500 else "upstream_error"


def build_forward_pool() -> ForwardPool:
    """The pooled connections to the pods (separate from the pollers' httpx client, whose few
    requests a second gain nothing from this). An idle connection is dropped a second before the
    model server would close it (``EdgeLimits.keep_alive_timeout``): reusing one the server is
    closing at that moment fails the request, and would take the pod out of the rotation."""
    return ForwardPool(max_idle_per_pod=200, keepalive_expiry=POOL_KEEPALIVE_SECONDS)


def build_timeouts(upstream_timeout: float, connect_timeout: float) -> dict[str, float]:
    """httpcore's per-request timeouts: connecting (and waiting for a pooled connection) is quick
    or the pod is in trouble; the answer may take as long as a generation does."""
    return {"connect": connect_timeout, "pool": connect_timeout, "read": upstream_timeout, "write": upstream_timeout}


class Forwarder:
    def __init__(
        self,
        pool: ForwardPool,
        table: BackendTable,
        metrics: RouterMetrics,
        retry_after: float,
        timeouts: dict[str, float],
        balancer: Balancer | None = None,
    ):
        self.pool, self.table, self.metrics, self.retry_after = pool, table, metrics, retry_after
        self.balancer: Balancer = balancer or LeastExpectedWait(table)
        self.extensions = {"timeout": timeouts}
        self.hosts: dict[str, bytes] = {}  # pod url -> its Host header value

    async def aclose(self) -> None:
        await self.pool.aclose()

    def _host(self, url: str) -> bytes:
        host = self.hosts.get(url)
        if host is None:
            if len(self.hosts) > 10_000:  # pods come and go: forget them all now and then
                self.hosts.clear()
            host = self.hosts[url] = url.split("://", 1)[1].encode("ascii")
        return host

    def _count(self, model: str, outcome: str) -> None:
        self.metrics.requests.labels(model, outcome).inc()

    async def forward(
        self, model: str, path: str, body: bytes,
        headers: list[tuple[bytes, bytes]] | Callable[[str], list[tuple[bytes, bytes]]], request_id: str,
        measure_latency: bool = True,
    ) -> UpstreamResponse:
        """``headers``: the same for every try, or built per pod tried (given its URL: a job's
        creation names the pod in the id it sends). ``measure_latency``: False for a request that
        only queues work (a job's creation), whose quick answer says nothing of how long the pod
        takes per request."""
        if model not in self.table.models:
            # Only known names become label values: clients cannot grow /metrics.
            self._count(UNKNOWN_MODEL_LABEL, "unknown_model")
            known = ", ".join(sorted(self.table.models)) or "none"
            raise RouterError(404, "model_not_found", f"unknown model {model!r}; known models: {known}")
        tried: set[str] = set()
        last: Attempt | None = None
        for index in range(MAX_ATTEMPTS):
            lease = self.balancer.choose(model, frozenset(tried))
            if lease is None:
                break
            if index:
                self.metrics.retries.labels(model).inc()
            tried.add(lease.url)
            relayed = False
            try:
                pod_headers = headers(lease.url) if callable(headers) else headers
                attempt, upstream, read_body = await self._send(lease.pod, model, path, body, pod_headers)
                # The one retry rule: after a connection failure or a 503, once, when another pod can take it now.
                retry = should_retry(index, attempt) and self.balancer.has_choice(model, frozenset(tried))
                if upstream is not None and not retry:
                    relayed = True  # the response releases the lease once it is relayed
                    return self._relay(lease, upstream, read_body, request_id, measure_latency)
                if upstream is not None:
                    await asyncio.shield(upstream.aclose())  # shielded: the pooled connection goes back
            finally:
                if not relayed:
                    lease.release()
            last = attempt
            if not retry:
                break
        if last is None:
            self._count(model, "no_backend")
            raise RouterError(503, "no_ready_backend", f"model {model!r} has no ready backend", self.retry_after)
        if last.failure == UNFORWARDABLE:
            self._count(model, "unforwardable")
            raise RouterError(400, "unforwardable_request", "the request cannot be forwarded as HTTP/1.1 (check its headers)")
        if last.failure == TIMEOUT_FAILURE:
            self._count(model, "timeout")
            raise RouterError(504, "upstream_timeout", f"the backend of model {model!r} did not answer in time")
        if last.failure == OTHER_FAILURE:
            self._count(model, "forward_failed")
            raise RouterError(502, "forward_failed", f"forwarding to a backend of model {model!r} failed")
        self._count(model, "unreachable")
        raise RouterError(503, "backend_unreachable", f"no backend of model {model!r} could be reached", self.retry_after)

    async def forward_to(
        self, pod_url: str, method: str, path: str, headers: list[tuple[bytes, bytes]], request_id: str
    ) -> UpstreamResponse:
        """One request to the pod that holds a job (no balancing, no retry: only that pod has it).
        A pod no longer in the table, or one that cannot be reached, answers 404 ``job_pod_gone``.
        Not counted as load: an event stream may stay open for the job's whole life."""
        if pod_url not in self.table.pods:
            raise RouterError(404, "job_pod_gone", "the pod holding this job is gone (its results went with it)")
        request = httpcore.Request(
            method.encode("ascii"), (pod_url + path).encode("ascii"),
            headers=[(b"host", self._host(pod_url)), *headers], extensions=self.extensions,
        )
        try:
            upstream = await self.pool.handle_async_request(request)
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as err:
            if classify_failure(err) == TIMEOUT_FAILURE:
                raise RouterError(504, "upstream_timeout", "the pod holding this job did not answer in time") from None
            raise RouterError(404, "job_pod_gone", f"the pod holding this job cannot be reached: {err!r}") from None
        response = UpstreamResponse(upstream, request_id, lambda completed: None)
        response.origin = pod_url
        return response

    async def _send(
        self, pod: PodState, model: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]],
    ) -> tuple[Attempt, httpcore.Response | None, bytes | None]:
        """One try at ``pod``: how it ended, the response (None when none came back) and, for a 503,
        its body (read to see its code)."""
        request = httpcore.Request(
            b"POST",
            (pod.url + path).encode("ascii"),
            headers=[(b"host", self._host(pod.url)), (b"content-length", str(len(body)).encode()), *headers],
            content=body,
            extensions=self.extensions,
        )
        try:
            upstream = await self.pool.handle_async_request(request)
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as err:
            failure = classify_failure(err)
            if failure == CONNECTION_FAILURE:
                # Out of the rotation until a poll reaches it again.
                pod.reachable, pod.last_error = False, str(err) or type(err).__name__
                log.warning("forward to %s failed: %s", pod.url, pod.last_error, extra={"model": model})
            else:
                log.info("request not forwarded to %s (%s): %r", pod.url, failure, err, extra={"model": model})
            return Attempt(failure=failure), None, None
        if upstream.status != 503:
            return Attempt(status=upstream.status), upstream, None
        try:
            read_body = await read_bounded(upstream, MAX_ERROR_BODY_BYTES)
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError):
            read_body = b""
        except BaseException:
            await asyncio.shield(upstream.aclose())  # shielded: when cancelled, the connection still goes back
            raise
        if read_error_code(read_body) == "draining":
            # It is shutting down: no new work for it, whatever its last poll said.
            pod.hold_until = time.monotonic() + drain_hold_seconds(header_value(upstream.headers, b"retry-after"))
        return Attempt(status=503), upstream, read_body

    def _relay(
        self, lease: Lease, upstream: httpcore.Response, read_body: bytes | None, request_id: str, measure_latency: bool,
    ) -> UpstreamResponse:
        """The response to relay; it releases ``lease`` when relayed (its time is the pod's latency
        sample when it completed well and ``measure_latency``: errors are fast, they say nothing of speed)."""
        model = lease.model

        def done(completed: bool) -> None:
            sample = measure_latency and completed and upstream.status < 400
            self.metrics.upstream_duration.labels(model).observe(lease.release(sample))
            self._count(model, outcome_for_status(upstream.status) if completed else "aborted")

        response = UpstreamResponse(upstream, request_id, done, read_body)
        response.origin = lease.url
        return response
