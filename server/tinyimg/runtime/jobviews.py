"""How the model server describes a job: the job resource (``GET /v1/jobs/{id}`` and its webhook),
and OpenAI's images answer. Pure functions of a job record; part of the job service
(``tinyimg.runtime.jobrunner``)."""

from __future__ import annotations

import base64
import time
from typing import cast

from tinyimg.core.jobs import build_job_url
from tinyimg.runtime.jobrunner import build_error_data
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.params import build_parameters_response
from tinyimg.wire.contract import JobErrorResponse, JobImageResponse, JobResponse, JobTimingsResponse
from tinyimg.wire.requests import (
    OpenAIImageData,
    OpenAIImagesResponse,
    OutputFormat,
)


def build_job_response(base_url: str, r: JobRecord, job_id: str | None = None) -> JobResponse:
    """The job as seen at ``base_url`` under ``job_id`` (default: this server's own id)."""
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
            JobImageResponse(url=build_job_url(base_url, job_id, f"/images/{i}"), seed=seed, format=r.output_format)
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


def build_webhook_payload(r: JobRecord) -> dict[str, object]:
    """The finished job as its client knows it: through a router, the router's id and URLs."""
    return build_job_response(r.public_base_url or r.base_url, r, r.public_id).model_dump(mode="json")


def build_images_response(r: JobRecord, as_url: bool) -> OpenAIImagesResponse:
    """OpenAI's answer: each image as base64, or (``response_format: url``) as the URL of the job's
    image, valid for the jobs' result TTL. Shared by generations and edits."""
    if as_url:
        data = [OpenAIImageData(url=build_job_url(r.base_url, r.id, f"/images/{i}")) for i in range(len(r.images))]
    else:
        data = [OpenAIImageData(b64_json=base64.b64encode(image).decode("ascii")) for image in r.images]
    return OpenAIImagesResponse(created=int(time.time()), data=data, output_format=cast(OutputFormat, r.output_format))
