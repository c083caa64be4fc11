"""The one HTTP error of both services (model server and router), and the shape it leaves in:
{"error": {"code", "message", "request_id"}} (plus extra fields such as "field"), with
Retry-After where waiting helps. Torch-free: the router, the engine and the edge all use it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

from tinyimg.core.logs import request_id_var

# Stable codes where Python's phrase changed between versions (413 is "Content Too Large" in 3.13).
_STATUS_CODES = {413: "payload_too_large", 431: "headers_too_large"}


class ApiError(Exception):
    """An error with its HTTP answer. Domain errors subclass it (the engine's ``EngineError``, the
    router's ``RouterError``); one handler turns any of them into the JSON error shape."""

    def __init__(
        self,
        message: str,
        status: int = 500,
        code: str = "internal_error",
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message, self.status, self.code, self.retry_after = message, status, code, retry_after
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return self.message

    def to_response(self) -> JSONResponse:
        response = build_error_response(self.status, self.code, self.message, self.retry_after, **self.extra)
        response.headers.update(self.headers)
        return response


class InvalidField(ApiError):
    """One input value is at fault: 422 naming the field; ``reason`` is the message without it."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}", 422, "invalid_request", extra={"field": field})
        self.field, self.reason = field, reason


def build_error_body(code: str, message: str, request_id: str | None = None, **extra: Any) -> dict[str, Any]:
    rid = request_id if request_id is not None else request_id_var.get()
    return {"error": {"code": code, "message": message, "request_id": rid, **extra}}


def build_retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def build_error_response(
    status: int, code: str, message: str, retry_after: float | None = None, **extra: Any
) -> JSONResponse:
    headers = {"Retry-After": build_retry_after(retry_after)} if retry_after is not None else None
    return JSONResponse(build_error_body(code, message, **extra), status_code=status, headers=headers)


def status_code_name(status: int) -> str:
    """A stable snake_case code for an HTTP status: 404 -> "not_found"."""
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


@dataclass(frozen=True)
class ErrorCode:
    status: int
    description: str
    where: str = "both"  # which service answers it: "server", "router" or "both"


# Every ``error.code`` either service answers, with its status: the error codes reference
# (docs/reference/errors.md) is generated from this table, and a test fails on a code used in the
# code base that is missing here.
ERROR_CODES: dict[str, ErrorCode] = {
    "bad_request": ErrorCode(400, "The request is not valid HTTP (h11 refused it) or a header cannot be read."),
    "unforwardable_request": ErrorCode(400, "A header the router cannot send on as HTTP/1.1 (a control character, an invalid name).", "router"),
    "unauthorized": ErrorCode(401, "API keys are on and the request carries none that is valid (`Authorization: Bearer <key>`)."),
    "not_found": ErrorCode(404, "No such route."),
    "model_not_found": ErrorCode(404, "The request names a model that is not served here; the message lists the known ones."),
    "job_not_found": ErrorCode(404, "No such job, or it belongs to another API key."),
    "job_expired": ErrorCode(404, "The job finished and its result was dropped (the result TTL or the result store's size bound).", "server"),
    "job_pod_gone": ErrorCode(404, "The pod that held the job is gone, and its result with it.", "router"),
    "adapter_not_found": ErrorCode(404, "`DELETE /v1/adapters/{model}/{name}` of an adapter that is not registered."),
    "image_not_found": ErrorCode(404, "The job has fewer images than the index asked for.", "server"),
    "url_expired": ErrorCode(403, "An image URL past its expiry (`jobs.urlTtlSeconds`); read the job again for a fresh one."),
    "admin_required": ErrorCode(403, "Changing run-time adapters (`POST`/`DELETE /v1/adapters`) needs the key of a tenant with `admin: true` (any key of a plain keys file)."),
    "url_invalid": ErrorCode(403, "An image URL whose signature does not match (altered, or signed with another secret)."),
    "method_not_allowed": ErrorCode(405, "The route does not take this method."),
    "request_timeout": ErrorCode(408, "The request head or body did not arrive in time (header and body timeouts of the edge)."),
    "job_cancelled": ErrorCode(409, "The job was cancelled (DELETE /v1/jobs/{id}) before it finished.", "server"),
    "job_finished": ErrorCode(409, "DELETE of a job that already finished: nothing to cancel.", "server"),
    "job_not_succeeded": ErrorCode(409, "The job's images were asked for before it succeeded.", "server"),
    "job_id_taken": ErrorCode(409, "The job id a router chose is already in use on this pod.", "server"),
    "payload_too_large": ErrorCode(413, "The request body is over `maxBodyBytes` (declared or counted as it arrives)."),
    "invalid_request": ErrorCode(422, "A field is missing or invalid; `error.field` names it."),
    "content_blocked": ErrorCode(422, "The model's content check flagged an image under the `block` policy (nothing was kept), or the prompt holds a phrase of `safety.denyPrompts` (`error.field` names it).", "server"),
    "queue_full": ErrorCode(429, "The model's queue holds `runtime.queueSize` waiting requests (with a shared queue, `jobs.maxQueuedJobs` jobs); retry after `Retry-After`.", "server"),
    "quota_exceeded": ErrorCode(429, "The API key's tenant is over a quota of its keys file: its image-steps per minute (the router; with `X-RateLimit-*` headers) or its `maxQueued` waiting requests (the model server)."),
    "rate_limited": ErrorCode(429, "Too many requests for this API key (the router's rate limit), or too many failed key attempts from this address."),
    "too_many_streams": ErrorCode(429, "Too many open event streams for this job, this client or this process."),
    "too_many_waiting": ErrorCode(429, "This client (its API key, or its address without keys) already holds its share of a starting model's waiting room.", "router"),
    "headers_too_large": ErrorCode(431, "The request head is over `maxHeaderBytes`, or has more headers than allowed."),
    "client_disconnected": ErrorCode(499, "The client hung up before its answer; its job was withdrawn (for the log and the metrics).", "server"),
    "client_closed_request": ErrorCode(499, "The client hung up while the router waited for a pod (for the log and the metrics).", "router"),
    "worker_lost": ErrorCode(500, "The job was taken by a pod that stopped before finishing it, `jobs.maxAttempts` times.", "server"),
    "internal_error": ErrorCode(500, "A bug: the details are in the server's log under the request id."),
    "generation_failed": ErrorCode(500, "The pipeline call failed for this request (the message says how).", "server"),
    "out_of_memory": ErrorCode(500, "The device ran out of memory for this batch; fewer images or a smaller size may fit.", "server"),
    "forward_failed": ErrorCode(502, "Forwarding to a pod failed in a way that says nothing about the pod.", "router"),
    "model_not_ready": ErrorCode(503, "The model is loading (retry after `Retry-After`) or failed to load (the reason is in the message).", "server"),
    "not_ready": ErrorCode(503, "The readiness probe: not every model is loaded yet."),
    "draining": ErrorCode(503, "The process is shutting down; another replica can take the request (the router retries it once)."),
    "no_ready_backend": ErrorCode(503, "No ready pod serves the model and none is coming.", "router"),
    "backend_unreachable": ErrorCode(503, "The model's pods refused or reset the connection.", "router"),
    "cold_start_timeout": ErrorCode(503, "The request waited for a pod of a model at zero longer than `autoscaling.coldStartTimeoutSeconds`.", "router"),
    "waiting_room_full": ErrorCode(503, "The waiting room of a starting model is full.", "router"),
    "server_busy": ErrorCode(503, "The request bodies held at once would pass `maxBodyBytesTotal`; retry shortly."),
    "too_many_connections": ErrorCode(503, "The process holds its connection limit; health probes still get through."),
    "queue_unavailable": ErrorCode(503, "The shared job queue (Redis) cannot be reached; retry after `Retry-After`."),
    "storage_unavailable": ErrorCode(503, "The result store cannot be written or read; a job whose images could not be stored fails with it."),
    "deadline_exceeded": ErrorCode(504, "The request waited or generated longer than `runtime.requestTimeoutSeconds`.", "server"),
    "upstream_timeout": ErrorCode(504, "The pod did not answer within the router's upstream timeout.", "router"),
}
