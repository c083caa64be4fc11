"""How the model server describes a job: the job resource (``GET /v1/jobs/{id}`` and its webhook),
and OpenAI's images answer. Pure functions of a job record; part of the job service
(``tinyimg.runtime.jobrunner``)."""

from __future__ import annotations

import base64
import time
from typing import Any, cast

from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import build_job_url
from tinyimg.durable.jobdocs import StoredJob
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.params import build_parameters_response
from tinyimg.wire.contract import JobErrorResponse, JobImageResponse, JobResponse, JobTimingsResponse
from tinyimg.wire.requests import (
    OpenAIImageData,
    OpenAIImagesResponse,
    OutputFormat,
)


def build_error_data(err: ApiError) -> dict[str, Any]:
    return {"code": err.code, "message": err.message, "status": err.status, **err.extra}


def build_job_response(base_url: str, r: JobRecord, job_id: str | None = None,
                       image_urls: list[str] | None = None) -> JobResponse:
    """The job as seen at ``base_url`` under ``job_id`` (default: this server's own id); its
    images at ``image_urls`` (capability URLs of the result store), else at its images route."""
    succeeded = r.status == "succeeded"
    job_id = job_id or r.id
    built: dict[str, object] = {
        "id": job_id,
        "status_url": build_job_url(base_url, job_id),
        "events_url": build_job_url(base_url, job_id, "/events"),
        "parameters": build_parameters_response(r.params, cast(OutputFormat, r.output_format)).model_dump(),
        "timings": JobTimingsResponse(queued_seconds=r.queued_seconds, inference_seconds=r.inference_seconds)
        if succeeded else None,
        "images": [
            JobImageResponse(url=image_urls[i] if image_urls else build_job_url(base_url, job_id, f"/images/{i}"),
                             seed=seed, format=r.output_format)
            for i, seed in enumerate(r.seeds)
        ] if succeeded else None,
        "error": JobErrorResponse(**build_error_data(r.error)) if r.error is not None else None,
    }
    echoed = {name: read_job_field(r, name) for name in JobResponse.model_fields if name not in built}
    return JobResponse.model_validate(built | echoed)


def read_job_field(r: JobRecord, name: str) -> object:
    """A field of the job resource that is not built above: the record's (its state), else the
    request's that created it. So a new job field is one field on the request (or the record) and
    one on ``JobResponse``, nothing in between."""
    if hasattr(r, name):
        return getattr(r, name)
    return getattr(r.request, name, None)


def build_webhook_payload(r: JobRecord, image_urls: list[str] | None = None) -> dict[str, object]:
    """The finished job as its client knows it: through a router, the router's id and URLs; its
    images at ``image_urls`` (the result store's capability URLs) when stored."""
    return build_job_response(r.public_base_url or r.base_url, r, r.public_id, image_urls).model_dump(mode="json")


def build_images_response(r: JobRecord, as_url: bool, urls: list[str] | None = None) -> OpenAIImagesResponse:
    """OpenAI's answer: each image as base64, or (``response_format: url``) as ``urls`` (capability
    URLs of the result store) or else the URL of the job's image, valid for the jobs' result TTL.
    Shared by generations and edits."""
    if as_url:
        data = [OpenAIImageData(url=urls[i] if urls else build_job_url(r.base_url, r.id, f"/images/{i}"))
                for i in range(len(r.images))]
    else:
        data = [OpenAIImageData(b64_json=base64.b64encode(image).decode("ascii")) for image in r.images]
    return OpenAIImagesResponse(created=int(time.time()), data=data, output_format=cast(OutputFormat, r.output_format))


def build_stored_job(r: JobRecord, image_keys: list[str] | None = None) -> StoredJob:
    """The job as stored (Redis, the result store's ``job.json``): its resource without URLs, and
    what only its readers and the pod that runs it need (``tinyimg.durable.jobdocs``)."""
    doc = build_job_response("", r).model_dump(mode="json")
    for name in ("status_url", "events_url"):
        doc.pop(name, None)
    order = {
        "request": r.request.model_dump(mode="json", exclude_none=True) if r.request is not None else None,
        "key_hash": r.key_hash, "output_format": r.output_format, "base_url": r.base_url,
        "public_id": r.public_id, "public_base_url": r.public_base_url, "webhook": r.webhook, "preview": r.preview,
        "image_keys": image_keys if image_keys is not None else list(r.image_keys),
        "tenant": r.tenant.describe(),
    }
    if r.trace_headers:
        order["trace"] = r.trace_headers
    return StoredJob(r.id, doc, order, r.status)
