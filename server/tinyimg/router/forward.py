"""Forwarding a generation request to the least-loaded ready pod, and streaming its answer back.

Retry rule: at most one retry, on another pod, and only when nothing of a response has reached the
client: the connection failed (refused, reset, closed before any response) or the pod answered
503 (not ready). Once the upstream head is passed on, a failure aborts the client's connection
instead: the router never retries after a response has started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tinyimg.router.balancer import choose_backend, update_latency
from tinyimg.router.errors import RouterError
from tinyimg.router.metrics import RouterMetrics
from tinyimg.router.table import BackendTable, PodState

log = logging.getLogger("tinyimg.router.forward")

MAX_ATTEMPTS = 2
CONNECTION_FAILURE = "connection"
TIMEOUT_FAILURE = "timeout"
# Headers that describe one connection, not the message: never passed through a proxy.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)
# The client's key is for the router; the router's own server adds date and server.
NOT_FORWARDED_REQUEST = HOP_BY_HOP | {"authorization", "x-request-id"}
NOT_RETURNED_RESPONSE = (HOP_BY_HOP - {"content-length"}) | {"date", "server"}


@dataclass(frozen=True)
class Attempt:
    """How one try at one pod ended before anything was sent to the client."""

    status: int | None = None  # the upstream status, when a response head came back
    failure: str | None = None  # CONNECTION_FAILURE or TIMEOUT_FAILURE, when none did


def classify_failure(err: httpx.HTTPError) -> str | None:
    """What a transport error means for retrying; None for errors that are not the pod's fault."""
    if isinstance(err, httpx.ConnectTimeout | httpx.ConnectError | httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return CONNECTION_FAILURE  # refused, reset, or closed before any response byte
    if isinstance(err, httpx.TimeoutException):
        return TIMEOUT_FAILURE  # the pod is working on it: retrying would run it twice and wait twice
    return None


def should_retry(attempt_index: int, attempt: Attempt) -> bool:
    """Retry (on another pod) only after a connection failure or a 503, and only once."""
    if attempt_index + 1 >= MAX_ATTEMPTS:
        return False
    return attempt.failure == CONNECTION_FAILURE or attempt.status == 503


def build_upstream_headers(headers: list[tuple[str, str]], request_id: str, client_host: str | None) -> dict[str, str]:
    out = {k: v for k, v in headers if k.lower() not in NOT_FORWARDED_REQUEST}
    out["x-request-id"] = request_id
    if client_host:
        prior = out.get("x-forwarded-for")
        out["x-forwarded-for"] = f"{prior}, {client_host}" if prior else client_host
    return out


def build_response_headers(raw: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    out = [(k.lower(), v) for k, v in raw if k.lower().decode("latin-1") not in NOT_RETURNED_RESPONSE]
    out = [(k, v) for k, v in out if k != b"x-request-id"]
    out.append((b"x-request-id", request_id.encode("latin-1")))
    return out


class UpstreamResponse(Response):
    """A response that relays an upstream response's bytes unchanged (no re-encoding), and calls
    ``on_done(completed)`` exactly once, however the relay ends (client gone included)."""

    def __init__(self, upstream: httpx.Response, request_id: str, on_done: Callable[[bool], None]):
        self.upstream, self.on_done = upstream, on_done
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = build_response_headers(upstream.headers.raw, request_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completed = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            completed = True
        finally:
            await self.upstream.aclose()
            self.on_done(completed)


def outcome_for_status(status: int) -> str:
    if status < 400:
        return "ok"
    return "upstream_client_error" if status < 500 else "upstream_error"


class Forwarder:
    def __init__(self, client: httpx.AsyncClient, table: BackendTable, metrics: RouterMetrics, retry_after: float):
        self.client, self.table, self.metrics, self.retry_after = client, table, metrics, retry_after

    def _count(self, model: str, outcome: str) -> None:
        self.metrics.requests.labels(model, outcome).inc()

    async def forward(self, model: str, path: str, body: bytes, headers: dict[str, str], request_id: str) -> UpstreamResponse:
        if model not in self.table.models:
            self._count(model if len(model) <= 100 else "invalid", "unknown_model")
            known = ", ".join(sorted(self.table.models)) or "none"
            raise RouterError(404, "model_not_found", f"unknown model {model!r}; known models: {known}")
        tried: set[str] = set()
        last: Attempt | None = None
        for index in range(MAX_ATTEMPTS):
            choice = choose_backend(self.table.candidates(model), frozenset(tried))
            if choice is None:
                break
            if index:
                self.metrics.retries.labels(model).inc()
            pod = self.table.pods[choice.url]
            tried.add(pod.url)
            may_retry = index + 1 < MAX_ATTEMPTS
            attempt, response = await self._try(pod, model, path, body, headers, request_id, may_retry, tried)
            if response is not None:
                return response
            last = attempt
            if not should_retry(index, attempt):
                break
        if last is None:
            self._count(model, "no_backend")
            raise RouterError(503, "no_ready_backend", f"model {model!r} has no ready backend", self.retry_after)
        if last.failure == TIMEOUT_FAILURE:
            self._count(model, "timeout")
            raise RouterError(504, "upstream_timeout", f"the backend of model {model!r} did not answer in time")
        self._count(model, "unreachable")
        raise RouterError(503, "backend_unreachable", f"no backend of model {model!r} could be reached", self.retry_after)

    async def _try(
        self,
        pod: PodState,
        model: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        request_id: str,
        may_retry: bool,
        tried: set[str],
    ) -> tuple[Attempt, UpstreamResponse | None]:
        """One try at ``pod``: a response to relay, or (None) how it failed before any byte was sent."""
        pod.inflight += 1
        pod.sent += 1
        started = time.perf_counter()
        request = self.client.build_request("POST", pod.url + path, content=body, headers=headers)
        try:
            upstream = await self.client.send(request, stream=True)
        except httpx.HTTPError as err:
            pod.inflight -= 1
            failure = classify_failure(err) or CONNECTION_FAILURE
            if failure == CONNECTION_FAILURE:
                # Out of the rotation until a poll reaches it again.
                pod.reachable, pod.last_error = False, str(err) or type(err).__name__
            log.warning("forward to %s failed: %s", pod.url, pod.last_error or err, extra={"model": model})
            return Attempt(failure=failure), None
        attempt = Attempt(status=upstream.status_code)
        # A 503 is relayed as is unless another pod can take the request now.
        if (
            may_retry
            and should_retry(0, attempt)
            and choose_backend(self.table.candidates(model), frozenset(tried)) is not None
        ):
            await upstream.aclose()
            pod.inflight -= 1
            return attempt, None

        def done(completed: bool) -> None:
            pod.inflight -= 1
            elapsed = time.perf_counter() - started
            self.metrics.upstream_duration.labels(model).observe(elapsed)
            if completed and upstream.status_code < 400:  # errors are fast and say nothing of speed
                pod.latency[model] = update_latency(pod.latency.get(model), elapsed)
            self._count(model, outcome_for_status(upstream.status_code) if completed else "aborted")

        return attempt, UpstreamResponse(upstream, request_id, done)
