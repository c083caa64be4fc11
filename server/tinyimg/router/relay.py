"""What the router changes in a pod's answer before relaying it: image URLs that name the pod
become the router's, with a signed job id (``tinyimg.router.jobids``). A pod's capability URL of
its result directory is rebased on the router when the router reads the same directory
(``--result-store``), else it becomes the router's keyed image route; an S3 URL stays as it is."""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from tinyimg.router.jobids import build_router_job_id
from tinyimg.router.requests import read_key_hash
from tinyimg.router.state import RouterState
from tinyimg.router.upstream import UpstreamResponse


def serves_files(state: RouterState) -> bool:
    """The router reads the pods' result directory (``--result-store``): it serves their file URLs."""
    return state.durable is not None and state.durable.results is not None


def read_file_url(url: str) -> tuple[str, str]:
    """(job id, image index) of a ``/v1/files/jobs/<job id>/<index>.<format>`` URL (pure)."""
    key = url.split("/v1/files/", 1)[1].split("?", 1)[0]
    _, job_id, name = key.split("/", 2)
    return job_id, name.split(".", 1)[0]


def rebase_file_url(url: str, base_url: str) -> str:
    """A directory store's ``/v1/files/...`` URL on the router's base URL (the router serves them
    from the same directory); any other URL (an S3 presigned one) as it is."""
    _, files, rest = url.partition("/v1/files/")
    return f"{base_url.rstrip('/')}/v1/files/{rest}" if files else url


async def rewrite_image_urls(upstream: UpstreamResponse, request: Request, state: RouterState) -> Response:
    """An OpenAI images answer with ``url`` data: each pod URL (``.../v1/jobs/<pod job>/images/<i>``)
    becomes the router's, with a signed job id, so the client fetches it through the router."""
    data = json.loads(await upstream.read_all())
    base = str(request.base_url).rstrip("/")
    key_hash = read_key_hash(request)
    for item in data.get("data", []):
        url = item["url"]
        if "/v1/files/" in url and serves_files(state):  # a capability URL of the shared result directory
            item["url"] = rebase_file_url(url, base)
            continue
        if "/v1/files/" in url:  # the pod's own directory: through the router's keyed route to the pod
            pod_job_id, index = read_file_url(url)
        elif "/v1/jobs/" in url:
            pod_job_id, _, index = url.split("/v1/jobs/", 1)[1].partition("/images/")
        else:  # an S3 presigned URL: the bucket serves it
            continue
        job_id = build_router_job_id(state.job_secret, pod_job_id, upstream.origin, key_hash)
        item["url"] = f"{base}/v1/jobs/{job_id}/images/{index}"
    return JSONResponse(data, upstream.status_code, {"x-request-id": request.scope["state"]["request_id"]})
