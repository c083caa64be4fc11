"""A finished job into the result store: each image written once with its generation parameters
(in a PNG's ``parameters`` text chunk and in the object's metadata), then the job's record beside
them (``tinyimg.durable.results``). Keys are functions of the job id, so a job taken again after
its pod died rewrites the same objects, never a second set."""

from __future__ import annotations

import json
from typing import cast

from tinyimg import imaging
from tinyimg.durable.jobdocs import StoredJob
from tinyimg.durable.results import ResultStore, image_key, record_key
from tinyimg.provenance.audit import audit_key
from tinyimg.provenance.pngtext import add_png_text, has_png_text
from tinyimg.runtime.jobstore import JobRecord
from tinyimg.runtime.params import build_parameters_response
from tinyimg.wire.requests import OutputFormat

# Object metadata is small (S3 allows 2 KB in all): the prompts stay in the PNG and the record.
METADATA_LEFT_OUT = ("prompt", "negative_prompt")


def build_image_parameters(record: JobRecord, seed: int) -> dict[str, object]:
    parameters = build_parameters_response(record.params, cast(OutputFormat, record.output_format)).model_dump(mode="json")
    return {**parameters, "seed": seed, "model": record.model}


async def store_images(store: ResultStore, record: JobRecord, images: list[bytes], seeds: list[int]) -> tuple[list[bytes], list[str]]:
    """Write the images; returns them as stored (PNG with its text chunk) and their keys."""
    stored, keys = [], []
    media_type = imaging.media_type(record.output_format)
    for index, (data, seed) in enumerate(zip(images, seeds, strict=True)):
        parameters = build_image_parameters(record, seed)
        if not has_png_text(data, "parameters"):  # the model's provenance settings may have written it already
            data = add_png_text(data, "parameters", json.dumps(parameters, ensure_ascii=False, sort_keys=True))
        brief = {k: v for k, v in parameters.items() if k not in METADATA_LEFT_OUT}
        metadata = {"tinyimg-job": record.id, "tinyimg-seed": str(seed), "tinyimg-parameters": json.dumps(brief, sort_keys=True)}
        key = image_key(record.id, index, record.output_format)
        await store.put(key, data, media_type, metadata)
        stored.append(data)
        keys.append(key)
    return stored, keys


async def store_audit(store: ResultStore, audit: dict[str, object]) -> None:
    """The job's audit record under each of its images' hashes (``tinyimg audit verify`` looks there)."""
    body = json.dumps(audit, sort_keys=True).encode()
    for image in cast(list[dict[str, str]], audit["images"]):
        await store.put(audit_key(image["sha256"]), body, "application/json", {})


async def store_record(store: ResultStore, job: StoredJob) -> None:
    await store.put(record_key(job.id), json.dumps(job.to_record()).encode(), "application/json", {})


async def read_record(store: ResultStore, job_id: str) -> StoredJob | None:
    found = await store.get(record_key(job_id))
    return StoredJob.from_record(json.loads(found.data)) if found is not None else None
