"""The jobs API: POST /v1/jobs (202 + Location), GET /v1/jobs/{id}, its SSE events, DELETE to
cancel, and GET /v1/jobs/{id}/images/{i}. Creating needs the API key (when keys are set); reading
a job needs the key that created it (a job of another key answers 404 like an unknown one).

With a shared queue (``jobs.redisUrl``) a new job goes to Redis and every read is answered from
there (``tinyimg.durable``), whichever pod runs it. Without one, jobs run here and are read from
memory; a finished job no longer in memory (evicted, or the server restarted) is read from the
result store's record, when there is a store."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from tinyimg import imaging
from tinyimg.api.deps import ApiKeyDep, ConfigDep, DurableDep, JobsDep, read_key_hash, read_tenancy
from tinyimg.api.sse import parse_last_event_id, stream_job_events
from tinyimg.core.auth import hash_bearer
from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import JOB_ID, JobExpired, JobNotFound, read_job_identity
from tinyimg.durable.jobdocs import StoredJob
from tinyimg.durable.reader import DurableJobs, build_image_response, parse_stream_event_id
from tinyimg.http.streams import TicketedStreamingResponse
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


def reader_key(request: Request) -> str | None:
    return hash_bearer(request.headers.get("authorization"))


async def find_job(request: Request, jobs: JobsApi, durable: DurableJobs, job_id: str) -> JobRecord | StoredJob:
    """The job in this process's memory (no shared queue), else as stored; 404 when neither has it."""
    if durable.queue is not None:
        return await durable.read(job_id, reader_key(request))
    try:
        return read_job(request, jobs, job_id)
    except (JobNotFound, JobExpired):
        stored = await durable.find(job_id, reader_key(request)) if durable.results is not None else None
        if stored is None:
            raise
        return stored


async def render(durable: DurableJobs, job: JobRecord | StoredJob, base_url: str) -> JobResponse:
    if isinstance(job, StoredJob):
        return JobResponse.model_validate(await durable.render(job, base_url))
    # Capability URLs when stored, on the base URL its client knows (a router serves them too).
    urls = await durable.urls(job.image_keys, job.public_base_url or base_url)
    return build_job_response(base_url, job, image_urls=urls)


@router.post(
    "/v1/jobs", status_code=202, response_model=JobResponse,
    responses=build_error_responses(*BODY_ERRORS, 401, 404, 409, 429, 503, *EDGE_ERRORS),
)
async def create_job_route(
    body: JobRequest, request: Request, response: Response, config: ConfigDep, jobs: JobsDep, durable: DurableDep,
    _auth: ApiKeyDep,
) -> JobResponse:
    request.state.model = body.model
    identity = read_job_identity(request.headers, request.app.state.router_secret)
    webhook = await check_webhook(body.webhook, config.jobs_config()) if body.webhook is not None else None
    order = JobOrder(
        body, body.output_format, str(request.base_url), identity.key_hash or read_key_hash(request), webhook=webhook,
        preview=body.preview, identity=identity, **read_tenancy(request),
    )
    job: JobRecord | StoredJob = await jobs.enqueue(order) if durable.queue is not None else await jobs.submit(order)
    answer = await render(durable, job, str(request.base_url))
    response.headers["Location"] = answer.status_url
    return answer


@router.get("/v1/jobs/{job_id}", response_model=JobResponse, responses=READ_ERRORS)
async def read_job_route(job_id: str, request: Request, jobs: JobsDep, durable: DurableDep) -> JobResponse:
    return await render(durable, await find_job(request, jobs, durable, job_id), str(request.base_url))


@router.delete("/v1/jobs/{job_id}", response_model=JobResponse, responses=build_error_responses(404, 409, *EDGE_ERRORS))
async def cancel_job_route(job_id: str, request: Request, jobs: JobsDep, durable: DurableDep) -> JobResponse:
    """Queued: leaves the queue now. Running: stops at its next step (batch mates carry on).
    Cancelling a cancelled job again answers its state; a finished one answers 409."""
    job = await find_job(request, jobs, durable, job_id)
    if isinstance(job, StoredJob):
        job = await durable.cancel(job)
    elif not jobs.cancel(job) and job.status != "cancelled":
        raise ApiError(f"job {job_id} already {job.status}; nothing to cancel", 409, "job_finished")
    return await render(durable, job, str(request.base_url))


@router.get(
    "/v1/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **READ_ERRORS, **build_error_responses(429)},
    response_class=StreamingResponse,
)
async def stream_job_route(
    job_id: str, request: Request, jobs: JobsDep, durable: DurableDep, config: ConfigDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    job = await find_job(request, jobs, durable, job_id)
    keepalive = config.jobs_config().keepalive_seconds
    owner = job.order.get("key_hash") if isinstance(job, StoredJob) else job.key_hash
    client = owner or (request.client.host if request.client else "")
    ticket = request.app.state.streams.admit(job.id, client)  # 429 too_many_streams past a bound
    events = (durable.stream(job, parse_stream_event_id(last_event_id), keepalive) if isinstance(job, StoredJob)
              else stream_job_events(job, parse_last_event_id(last_event_id), keepalive))
    return TicketedStreamingResponse(
        ticket, events, media_type="text/event-stream",
        # No caching, and no buffering in nginx-style proxies: events must arrive as they happen.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/v1/jobs/{job_id}/images/{index}",
    responses={200: {"content": {m: {} for m in ("image/png", "image/jpeg", "image/webp")}},
               **build_error_responses(404, 409, *EDGE_ERRORS)},
    response_class=Response,
)
async def read_job_image_route(job_id: str, index: int, request: Request, jobs: JobsDep, durable: DurableDep) -> Response:
    job = await find_job(request, jobs, durable, job_id)
    if isinstance(job, StoredJob):
        return build_image_response(await durable.image(job, index), "private, max-age=3600")
    if job.status != "succeeded":
        raise ApiError(f"job {job_id} is {job.status}; images come once it has succeeded", 409, "job_not_succeeded")
    if not 0 <= index < len(job.images):
        raise ApiError(f"job {job_id} has {len(job.images)} images; no image {index}", 404, "image_not_found")
    return Response(
        job.images[index], media_type=imaging.media_type(job.output_format),
        headers={"X-Seed": str(job.seeds[index]), "Cache-Control": "private, max-age=3600"},
    )
