"""The jobs API: POST /v1/jobs (202 + Location), GET /v1/jobs/{id}, its SSE events, DELETE to
cancel, and GET /v1/jobs/{id}/images/{i}. Creating needs the API key (when keys are set); reading
a job needs the key that created it (a job of another key answers 404 like an unknown one)."""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field

from tinyimg import imaging
from tinyimg.api.auth import ApiKeyDep
from tinyimg.api.deps import ConfigDep, JobsDep
from tinyimg.api.generate import create_job
from tinyimg.api.requests import GenerateRequest, OutputFormat, build_parameters_response
from tinyimg.api.sse import TicketedStreamingResponse, parse_last_event_id, stream_job_events
from tinyimg.contract import (
    BODY_ERRORS,
    EDGE_ERRORS,
    JobErrorResponse,
    JobImageResponse,
    JobResponse,
    JobTimingsResponse,
    build_error_responses,
)
from tinyimg.errors import ApiError, InvalidField
from tinyimg.router.auth import hash_key, parse_bearer
from tinyimg.runtime.jobrunner import build_error_data
from tinyimg.runtime.jobstore import (
    JOB_ID,
    JOB_ID_HEADER,
    JOB_SIGNATURE_HEADER,
    PUBLIC_BASE_URL_HEADER,
    PUBLIC_JOB_ID_HEADER,
    JobNotFound,
    JobRecord,
    sign_job_headers,
)
from tinyimg.runtime.webhooks import check_webhook

log = logging.getLogger("tinyimg.api")

router = APIRouter(tags=["jobs"])

READ_ERRORS = build_error_responses(404, *EDGE_ERRORS)


class JobRequest(GenerateRequest):
    """``/generate``'s body, plus where to POST the finished job (hosts on the allow-list only)
    and whether to stream low-resolution ``preview`` events while it runs."""

    webhook: str | None = Field(None, max_length=2000)
    preview: bool = Field(
        False, description="Stream `preview` events (JPEG data URLs, longest side 128 px) while it runs; "
        "costs a little time per preview, at most one per jobs.previewIntervalMs.",
    )


# A router id is ``job_<hex>.<base64url>.<base64url>`` (tinyimg.router.jobids), under 500 characters.
PUBLIC_JOB_ID = re.compile(r"^[A-Za-z0-9._-]{1,1000}$")
MAX_BASE_URL = 2000


@dataclass(frozen=True)
class JobIdentity:
    """What the router says about a job it creates here (all None for a direct client)."""

    job_id: str | None = None
    public_id: str | None = None
    public_base_url: str | None = None


def read_job_identity(headers: Any, router_secret: bytes | None = None) -> JobIdentity:
    """The router's job headers, checked (422 naming the header when malformed). With the
    router's secret (``routerSecretFile``; the operator mounts it) they are believed only when
    their signature matches, and ignored otherwise (logged: a direct client, or a router with
    another secret, gets a job of the pod's own); without it, from whoever reaches the pod."""
    job_id, public_id, base_url = (headers.get(h) for h in (JOB_ID_HEADER, PUBLIC_JOB_ID_HEADER, PUBLIC_BASE_URL_HEADER))
    if router_secret is not None and (job_id or public_id or base_url):
        signature = headers.get(JOB_SIGNATURE_HEADER) or ""
        expected = sign_job_headers(router_secret, job_id or "", public_id or "", base_url or "")
        if not hmac.compare_digest(signature, expected):
            log.warning("job headers without a valid router signature: ignored", extra={"job_id": job_id})
            return JobIdentity()
    if job_id is not None and not JOB_ID.fullmatch(job_id):
        raise InvalidField(JOB_ID_HEADER, "must be job_ and 32 lowercase hex digits")
    if (public_id is None) != (base_url is None):
        raise InvalidField(PUBLIC_JOB_ID_HEADER, f"comes with {PUBLIC_BASE_URL_HEADER}, both or neither")
    if public_id is not None and not PUBLIC_JOB_ID.fullmatch(public_id):
        raise InvalidField(PUBLIC_JOB_ID_HEADER, "must be 1 to 1000 letters, digits, '.', '_' or '-'")
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(base_url) > MAX_BASE_URL \
                or any(c.isspace() or not c.isprintable() for c in base_url):
            raise InvalidField(PUBLIC_BASE_URL_HEADER, f"must be an http(s) URL of at most {MAX_BASE_URL} characters")
    return JobIdentity(job_id, public_id, base_url)


def build_job_url(base_url: str, job_id: str, tail: str = "") -> str:
    """Absolute, from the request's own host and base path (a router in front rewrites it)."""
    return f"{base_url.rstrip('/')}/v1/jobs/{job_id}{tail}"


def build_image_url(request: Request, job_id: str, index: int) -> str:
    return build_job_url(str(request.base_url), job_id, f"/images/{index}")


def build_job_response(base_url: str, r: JobRecord, job_id: str | None = None) -> JobResponse:
    """The job as seen at ``base_url`` under ``job_id`` (default: this server's own id)."""
    succeeded = r.status == "succeeded"
    job_id = job_id or r.id
    return JobResponse(
        id=job_id,
        model=r.model,
        status=r.status,
        position=r.position,
        step=r.step,
        total_steps=r.total_steps,
        eta_seconds=r.eta_seconds,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        status_url=build_job_url(base_url, job_id),
        events_url=build_job_url(base_url, job_id, "/events"),
        parameters=build_parameters_response(r.params, cast(OutputFormat, r.output_format)).model_dump(),
        timings=JobTimingsResponse(queued_seconds=r.queued_seconds, inference_seconds=r.inference_seconds)
        if succeeded else None,
        device=r.device,
        batch_size=r.batch_size,
        images=[
            JobImageResponse(url=build_job_url(base_url, job_id, f"/images/{i}"), seed=seed, format=r.output_format)
            for i, seed in enumerate(r.seeds)
        ] if succeeded else None,
        error=JobErrorResponse(**build_error_data(r.error)) if r.error is not None else None,
        webhook=r.webhook,
        preview=r.preview,
    )


def build_webhook_payload(r: JobRecord) -> dict[str, Any]:
    """The finished job as its client knows it: through a router, the router's id and URLs."""
    return build_job_response(r.public_base_url or r.base_url, r, r.public_id).model_dump(mode="json")


def read_job(request: Request, jobs: Any, job_id: str) -> JobRecord:
    """The job, if it exists and the caller holds the key that created it; else 404."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(job_id)
    record: JobRecord = jobs.get(job_id)
    if record.key_hash is not None:
        token = parse_bearer(request.headers.get("authorization"))
        if token is None or not hmac.compare_digest(hash_key(token), record.key_hash):
            raise JobNotFound(job_id)
    return record


@router.post(
    "/v1/jobs", status_code=202, response_model=JobResponse,
    responses=build_error_responses(*BODY_ERRORS, 401, 404, 409, 429, 503, *EDGE_ERRORS),
)
async def create_job_route(
    body: JobRequest, request: Request, response: Response, config: ConfigDep, jobs: JobsDep, _auth: ApiKeyDep
) -> JobResponse:
    identity = read_job_identity(request.headers, request.app.state.router_secret)
    webhook = await check_webhook(body.webhook, config.jobs_config()) if body.webhook is not None else None
    generate_body = GenerateRequest.model_validate(body.model_dump(exclude={"webhook", "preview"}))
    record = await create_job(
        request, generate_body, config, jobs, body.output_format, webhook=webhook, job_id=identity.job_id,
        preview=body.preview,
    )
    # Set before anything else can run (no await since the job was created): its webhook sees them.
    record.public_id, record.public_base_url = identity.public_id, identity.public_base_url
    response.headers["Location"] = build_job_url(record.base_url, record.id)
    return build_job_response(record.base_url, record)


@router.get("/v1/jobs/{job_id}", response_model=JobResponse, responses=READ_ERRORS)
def read_job_route(job_id: str, request: Request, jobs: JobsDep) -> JobResponse:
    return build_job_response(str(request.base_url), read_job(request, jobs, job_id))


@router.delete("/v1/jobs/{job_id}", response_model=JobResponse, responses=build_error_responses(404, 409, *EDGE_ERRORS))
def cancel_job_route(job_id: str, request: Request, jobs: JobsDep) -> JobResponse:
    """Queued: leaves the queue now. Running: stops at its next step (batch mates carry on).
    Cancelling a cancelled job again answers its state; a finished one answers 409."""
    record = read_job(request, jobs, job_id)
    if not jobs.cancel(record) and record.status != "cancelled":
        raise ApiError(f"job {job_id} already {record.status}; nothing to cancel", 409, "job_finished")
    return build_job_response(str(request.base_url), record)


@router.get(
    "/v1/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **READ_ERRORS, **build_error_responses(429)},
    response_class=StreamingResponse,
)
def stream_job_route(
    job_id: str, request: Request, jobs: JobsDep, config: ConfigDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    record = read_job(request, jobs, job_id)
    after = parse_last_event_id(last_event_id)
    client = record.key_hash or (request.client.host if request.client else "")
    ticket = request.app.state.streams.admit(record.id, client)  # 429 too_many_streams past a bound
    return TicketedStreamingResponse(
        ticket, stream_job_events(record, after, config.jobs_config().keepalive_seconds),
        media_type="text/event-stream",
        # No caching, and no buffering in nginx-style proxies: events must arrive as they happen.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/v1/jobs/{job_id}/images/{index}",
    responses={200: {"content": {m: {} for m in ("image/png", "image/jpeg", "image/webp")}},
               **build_error_responses(404, 409, *EDGE_ERRORS)},
    response_class=Response,
)
def read_job_image_route(job_id: str, index: int, request: Request, jobs: JobsDep) -> Response:
    record = read_job(request, jobs, job_id)
    if record.status != "succeeded":
        raise ApiError(f"job {job_id} is {record.status}; images come once it has succeeded", 409, "job_not_succeeded")
    if not 0 <= index < len(record.images):
        raise ApiError(f"job {job_id} has {len(record.images)} images; no image {index}", 404, "image_not_found")
    return Response(
        record.images[index], media_type=imaging.media_type(record.output_format),
        headers={"X-Seed": str(record.seeds[index]), "Cache-Control": "private, max-age=3600"},
    )
