"""The jobs API: POST /v1/jobs (202 + Location), GET /v1/jobs/{id}, its SSE events, DELETE to
cancel, and GET /v1/jobs/{id}/images/{i}. Creating needs the API key (when keys are set); reading
a job needs the key that created it (a job of another key answers 404 like an unknown one)."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from tinyimg import imaging
from tinyimg.api.deps import ApiKeyDep, ConfigDep, JobsDep, read_key_hash
from tinyimg.api.sse import TicketedStreamingResponse, parse_last_event_id, stream_job_events
from tinyimg.core.auth import hash_bearer
from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import JOB_ID, JobNotFound, build_job_url, read_job_identity
from tinyimg.runtime.jobrunner import JobOrder, JobsApi
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.jobviews import build_job_response
from tinyimg.runtime.webhooks import check_webhook
from tinyimg.wire.contract import BODY_ERRORS, EDGE_ERRORS, JobResponse, build_error_responses
from tinyimg.wire.requests import JobRequest

log = logging.getLogger("tinyimg.api")

router = APIRouter(tags=["jobs"])

READ_ERRORS = build_error_responses(404, *EDGE_ERRORS)


def read_job(request: Request, jobs: JobsApi, job_id: str) -> JobRecord:
    """The job, if it exists and the caller holds the key that created it; else 404."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(job_id)
    record = jobs.get(job_id)
    if record.key_hash is not None:
        given = hash_bearer(request.headers.get("authorization"))
        if given is None or not hmac.compare_digest(given, record.key_hash):
            raise JobNotFound(job_id)
    return record


@router.post(
    "/v1/jobs", status_code=202, response_model=JobResponse,
    responses=build_error_responses(*BODY_ERRORS, 401, 404, 409, 429, 503, *EDGE_ERRORS),
)
async def create_job_route(
    body: JobRequest, request: Request, response: Response, config: ConfigDep, jobs: JobsDep, _auth: ApiKeyDep
) -> JobResponse:
    request.state.model = body.model
    identity = read_job_identity(request.headers, request.app.state.router_secret)
    webhook = await check_webhook(body.webhook, config.jobs_config()) if body.webhook is not None else None
    record = await jobs.submit(JobOrder(
        body, body.output_format, str(request.base_url), read_key_hash(request), webhook=webhook,
        preview=body.preview, identity=identity,
    ))
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
