"""Forwarding a generation request to the pod the balancer chooses (``tinyimg.router.balancer``);
its answer is relayed by ``tinyimg.router.upstream``, its headers chosen by ``tinyimg.router.headers``.

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpcore
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from tinyimg.core.tracing import build_exemplar, get_tracer, inject_headers, tracing_on
from tinyimg.http.limits import EdgeLimits
from tinyimg.router.balancer import Balancer, Lease, LeastExpectedWait
from tinyimg.router.errors import RouterError
from tinyimg.router.metrics import UNKNOWN_MODEL_LABEL, RouterMetrics
from tinyimg.router.pool import ForwardPool
from tinyimg.router.table import BackendTable, PodState
from tinyimg.router.upstream import UpstreamResponse, header_value, read_bounded

if TYPE_CHECKING:
    pass

log = logging.getLogger("tinyimg.router.forward")

MAX_ATTEMPTS = 2
POOL_KEEPALIVE_SECONDS = EdgeLimits.keep_alive_timeout - 1.0
CONNECTION_FAILURE = "connection"  # the pod failed: refused, reset, closed before any response
TIMEOUT_FAILURE = "timeout"  # the pod took too long: never retried (it may still be working on it)
UNFORWARDABLE = "unforwardable"  # this request cannot be sent by the HTTP client: the pod is fine
OTHER_FAILURE = "other"  # anything else the client raised: fail this request, keep the pod
# Headers that describe one connection, not the message: never passed through a proxy.
# A draining pod is out of the rotation this long unless its 503 says how long (Retry-After).
DRAIN_HOLD_SECONDS = 5.0
MAX_DRAIN_HOLD_SECONDS = 30.0
MAX_ERROR_BODY_BYTES = 64 * 1024  # a 503 body is read to see its code; a real one is ~200 bytes


def start_attempt_span(model: str, url: str, index: int) -> Span | None:
    """The CLIENT span of one try at one pod (None when tracing is off); the pod's server span is
    its child (the forwarded ``traceparent`` names it)."""
    if not tracing_on():
        return None
    return get_tracer().start_span("router.forward", kind=SpanKind.CLIENT, attributes={
        "tinyimg.model": model, "server.address": url, "tinyimg.attempt": index + 1})


def end_attempt_span(span: Span | None, status: int | None, failure: str | None = None) -> None:
    if span is None:
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if failure is not None or (status is not None and status >= 500):
        span.set_status(Status(StatusCode.ERROR, failure or f"HTTP {status}"))
    span.end()


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
        measure_latency: bool = True, adapters: frozenset[str] = frozenset(),
    ) -> UpstreamResponse:
        """``headers``: the same for every try, or built per pod tried (given its URL: a job's
        creation names the pod in the id it sends). ``measure_latency``: False for a request that
        only queues work (a job's creation), whose quick answer says nothing of how long the pod
        takes per request. ``adapters``: what the request names (``read_adapter_keys``): a pod
        holding them is preferred (``tinyimg.router.balancer``)."""
        if model not in self.table.models:
            # Only known names become label values: clients cannot grow /metrics.
            self._count(UNKNOWN_MODEL_LABEL, "unknown_model")
            known = ", ".join(sorted(self.table.models)) or "none"
            raise RouterError(404, "model_not_found", f"unknown model {model!r}; known models: {known}")
        tried: set[str] = set()
        last: Attempt | None = None
        for index in range(MAX_ATTEMPTS):
            lease = self.balancer.choose(model, frozenset(tried), adapters)
            if lease is None:
                break
            if index:
                self.metrics.retries.labels(model).inc()
            tried.add(lease.url)
            relayed = False
            span = start_attempt_span(model, lease.url, index)
            attempt = Attempt(failure=OTHER_FAILURE)  # until _send says how it ended
            try:
                pod_headers = headers(lease.url) if callable(headers) else headers
                if span is not None:
                    pod_headers = inject_headers(pod_headers, set_span_in_context(span))
                attempt, upstream, read_body = await self._send(lease.pod, model, path, body, pod_headers)
                # The one retry rule: after a connection failure or a 503, once, when another pod can take it now.
                retry = should_retry(index, attempt) and self.balancer.has_choice(model, frozenset(tried))
                if upstream is not None and not retry:
                    relayed = True  # the response releases the lease (and ends the span) once it is relayed
                    return self._relay(lease, upstream, read_body, request_id, measure_latency, span)
                if upstream is not None:
                    await asyncio.shield(upstream.aclose())  # shielded: the pooled connection goes back
            finally:
                if not relayed:
                    lease.release()
                    end_attempt_span(span, attempt.status, attempt.failure)
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
            headers=[(b"host", self._host(pod_url)), *inject_headers(headers)], extensions=self.extensions,
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
        span: Span | None = None,
    ) -> UpstreamResponse:
        """The response to relay; it releases ``lease`` when relayed (its time is the pod's latency
        sample when it completed well and ``measure_latency``: errors are fast, they say nothing of speed)."""
        model = lease.model

        def done(completed: bool) -> None:
            sample = measure_latency and completed and upstream.status < 400
            self.metrics.upstream_duration.labels(model).observe(lease.release(sample), build_exemplar())
            self._count(model, outcome_for_status(upstream.status) if completed else "aborted")
            end_attempt_span(span, upstream.status, None if completed else "the relay broke off")

        response = UpstreamResponse(upstream, request_id, done, read_body)
        response.origin = lease.url
        return response
