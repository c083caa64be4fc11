"""The jobs API: POST /v1/jobs (202 + Location), GET /v1/jobs/{id}, its SSE events, DELETE to
cancel, and GET /v1/jobs/{id}/images/{i}. Creating needs the API key (when keys are set); reading
a job needs the key that created it (a job of another key answers 404 like an unknown one)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field

from tinyimg import imaging
from tinyimg.api.auth import ApiKeyDep
from tinyimg.api.deps import ConfigDep, JobsDep
from tinyimg.api.generate import create_job
from tinyimg.api.requests import GenerateRequest, OutputFormat, build_parameters_response
from tinyimg.api.sse import stream_job_events
from tinyimg.contract import (
    BODY_ERRORS,
    EDGE_ERRORS,
    JobErrorResponse,
    JobImageResponse,
    JobResponse,
    JobTimingsResponse,
    build_error_responses,
)
from tinyimg.errors import ApiError
from tinyimg.router.auth import hash_key, parse_bearer
from tinyimg.runtime.jobrunner import build_error_data
from tinyimg.runtime.jobstore import JOB_ID, JobNotFound, JobRecord
from tinyimg.runtime.webhooks import check_webhook

router = APIRouter(tags=["jobs"])

READ_ERRORS = build_error_responses(404, *EDGE_ERRORS)


class JobRequest(GenerateRequest):
    """``/generate``'s body, plus where to POST the finished job (hosts on the allow-list only)."""

    webhook: str | None = Field(None, max_length=2000)


def build_job_url(base_url: str, job_id: str, tail: str = "") -> str:
    """Absolute, from the request's own host and base path (a router in front rewrites it)."""
    return f"{base_url.rstrip('/')}/v1/jobs/{job_id}{tail}"


def build_image_url(request: Request, job_id: str, index: int) -> str:
    return build_job_url(str(request.base_url), job_id, f"/images/{index}")


def build_job_response(base_url: str, r: JobRecord) -> JobResponse:
    succeeded = r.status == "succeeded"
    return JobResponse(
        id=r.id,
        model=r.model,
        status=r.status,
        position=r.position,
        step=r.step,
        total_steps=r.total_steps,
        eta_seconds=r.eta_seconds,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        status_url=build_job_url(base_url, r.id),
        events_url=build_job_url(base_url, r.id, "/events"),
        parameters=build_parameters_response(r.params, cast(OutputFormat, r.output_format)).model_dump(),
        timings=JobTimingsResponse(queued_seconds=r.queued_seconds, inference_seconds=r.inference_seconds)
        if succeeded else None,
        device=r.device,
        batch_size=r.batch_size,
        images=[
            JobImageResponse(url=build_job_url(base_url, r.id, f"/images/{i}"), seed=seed, format=r.output_format)
            for i, seed in enumerate(r.seeds)
        ] if succeeded else None,
        error=JobErrorResponse(**build_error_data(r.error)) if r.error is not None else None,
        webhook=r.webhook,
    )


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
    responses=build_error_responses(*BODY_ERRORS, 401, 404, 429, 503, *EDGE_ERRORS),
)
async def create_job_route(
    body: JobRequest, request: Request, response: Response, config: ConfigDep, jobs: JobsDep, _auth: ApiKeyDep
) -> JobResponse:
    webhook = await check_webhook(body.webhook, config.jobs_config()) if body.webhook is not None else None
    generate_body = GenerateRequest.model_validate(body.model_dump(exclude={"webhook"}))
    record = await create_job(request, generate_body, config, jobs, body.output_format, webhook=webhook)
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
    responses={200: {"content": {"text/event-stream": {}}}, **READ_ERRORS},
    response_class=StreamingResponse,
)
def stream_job_route(
    job_id: str, request: Request, jobs: JobsDep, config: ConfigDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    record = read_job(request, jobs, job_id)
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return StreamingResponse(
        stream_job_events(record, after, config.jobs_config().keepalive_seconds),
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
