"""How the model server describes a job: the job resource (``GET /v1/jobs/{id}`` and the webhook),
and the answers of the routes that wait for one (``/generate``, OpenAI's images). Pure functions
of a job record; part of the job service (``tinyimg.runtime.jobrunner``)."""

from __future__ import annotations

import base64
import time
from typing import cast

from tinyimg.core.jobs import build_job_url
from tinyimg.families.generation import GenerationParams
from tinyimg.runtime.jobrunner import build_error_data
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.wire.contract import JobErrorResponse, JobImageResponse, JobResponse, JobTimingsResponse
from tinyimg.wire.requests import (
    GenerateResponse,
    ImageResponse,
    LoraRequest,
    OpenAIImageData,
    OpenAIImagesResponse,
    OutputFormat,
    ParametersResponse,
    TimingsResponse,
)


def build_parameters_response(params: GenerationParams, output_format: OutputFormat) -> ParametersResponse:
    return ParametersResponse(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=params.width,
        height=params.height,
        steps=params.steps,
        guidance_scale=params.guidance_scale,
        seed=params.seeds[0],
        num_images=len(params.seeds),
        output_format=output_format,
        mode=params.mode,
        strength=params.strength,
        scheduler=params.scheduler,
        loras=[LoraRequest(name=name, scale=scale) for name, scale in params.loras],
    )


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


def build_webhook_payload(r: JobRecord) -> dict[str, object]:
    """The finished job as its client knows it: through a router, the router's id and URLs."""
    return build_job_response(r.public_base_url or r.base_url, r, r.public_id).model_dump(mode="json")


def build_generate_response(r: JobRecord, total_seconds: float, request_id: str) -> GenerateResponse:
    """``POST /generate``'s JSON answer: the images inline, as base64."""
    output_format = cast(OutputFormat, r.output_format)
    return GenerateResponse(
        model=r.model,
        images=[
            ImageResponse(b64=base64.b64encode(data).decode("ascii"), seed=seed, format=output_format)
            for data, seed in zip(r.images, r.seeds, strict=True)
        ],
        parameters=build_parameters_response(r.params, output_format),
        timings=TimingsResponse(
            queued_seconds=round(r.queued_seconds or 0.0, 6),
            inference_seconds=round(r.inference_seconds or 0.0, 6),
            total_seconds=round(total_seconds, 6),
        ),
        device=r.device or "",
        batch_size=r.batch_size or 0,
        request_id=request_id,
    )


def build_images_response(r: JobRecord, as_url: bool) -> OpenAIImagesResponse:
    """OpenAI's answer: each image as base64, or (``response_format: url``) as the URL of the job's
    image, valid for the jobs' result TTL. Shared by generations and edits."""
    if as_url:
        data = [OpenAIImageData(url=build_job_url(r.base_url, r.id, f"/images/{i}")) for i in range(len(r.images))]
    else:
        data = [OpenAIImageData(b64_json=base64.b64encode(image).decode("ascii")) for image in r.images]
    return OpenAIImagesResponse(created=int(time.time()), data=data, output_format=cast(OutputFormat, r.output_format))
