"""What the router changes in a pod's answer before relaying it: image URLs that name the pod
become the router's, with a signed job id (``tinyimg.router.jobids``)."""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from tinyimg.router.jobids import build_router_job_id
from tinyimg.router.requests import read_key_hash
from tinyimg.router.state import RouterState
from tinyimg.router.upstream import UpstreamResponse


async def rewrite_image_urls(upstream: UpstreamResponse, request: Request, state: RouterState) -> Response:
    """An OpenAI images answer with ``url`` data: each pod URL (``.../v1/jobs/<pod job>/images/<i>``)
    becomes the router's, with a signed job id, so the client fetches it through the router."""
    data = json.loads(await upstream.read_all())
    base = str(request.base_url).rstrip("/")
    key_hash = read_key_hash(request)
    for item in data.get("data", []):
        pod_job_id, _, index = item["url"].split("/v1/jobs/", 1)[1].partition("/images/")
        job_id = build_router_job_id(state.job_secret, pod_job_id, upstream.origin, key_hash)
        item["url"] = f"{base}/v1/jobs/{job_id}/images/{index}"
    return JSONResponse(data, upstream.status_code, {"x-request-id": request.scope["state"]["request_id"]})
