"""The jobs API through the router: creation is balanced like a generation, and every later
request about a job goes to the pod named in its signed id (tinyimg.router.jobids). Job JSON is
rewritten to carry router ids and router URLs; event streams and images are relayed as they
arrive (no buffering). The router chooses the pod job id itself and tells the pod the router id
and base URL at creation, so the pod's webhook, which the router never sees, carries them too. Creation and reads pass the router's key and rate checks; a job's id is
signed for the key that created it, so another key reads it as unknown."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from tinyimg.core.errors import ApiError
from tinyimg.core.jobs import (
    JOB_ID,
    JOB_ID_HEADER,
    JOB_KEY_HASH_HEADER,
    JOB_SIGNATURE_HEADER,
    PUBLIC_BASE_URL_HEADER,
    PUBLIC_JOB_ID_HEADER,
    new_job_id,
    sign_job_headers,
)
from tinyimg.core.tenants import build_tenant_headers
from tinyimg.durable.jobdocs import StoredJob
from tinyimg.durable.reader import DurableJobs, build_image_response, parse_stream_event_id
from tinyimg.http.streams import TicketedStreamingResponse
from tinyimg.router.headers import build_upstream_headers
from tinyimg.router.jobids import build_router_job_id, read_router_job_id
from tinyimg.router.relay import rebase_file_url, serves_files
from tinyimg.router.requests import (
    build_body_document,
    check_body,
    read_adapter_keys,
    read_client,
    read_key_hash,
    read_model_name,
)
from tinyimg.router.state import AccessDep, RouterState, StateDep
from tinyimg.router.tenancy import admit_work, read_body_fields, read_request_tenant, settle
from tinyimg.router.upstream import UpstreamResponse
from tinyimg.wire.contract import BODY_ERRORS, EDGE_ERRORS, JobResponse, build_error_responses
from tinyimg.wire.requests import JobRequest

router = APIRouter(tags=["jobs"], dependencies=[AccessDep])
files_router = APIRouter(tags=["jobs"])  # capability URLs: no key
READ_STATUSES = (401, 404, 429, 504, *EDGE_ERRORS)
READ_ERRORS = build_error_responses(*READ_STATUSES)
KEEPALIVE_SECONDS = 15.0  # a comment on a quiet shared job's event stream, as the pods send


def rewrite_job(data: dict[str, Any], job_id: str, base_url: str, serves_files: bool = False) -> dict[str, Any]:
    """A pod's job answer with the router's id and URLs (pure). An image URL of the pod becomes the
    router's image route, or (``serves_files``: the router reads the pods' result directory) the
    same capability URL on the router; an S3 presigned URL stays as it is."""
    url = f"{base_url.rstrip('/')}/v1/jobs/{job_id}"
    out = {**data, "id": job_id, "status_url": url, "events_url": f"{url}/events"}

    def image_url(i: int, given: str) -> str:
        if "/v1/files/" in given and serves_files:
            return rebase_file_url(given, base_url)
        return f"{url}/images/{i}" if "/v1/files/" in given or "/v1/jobs/" in given else given

    if data.get("images"):
        out["images"] = [{**image, "url": image_url(i, image["url"])} for i, image in enumerate(data["images"])]
    return out


def upstream_headers(request: Request) -> list[tuple[bytes, bytes]]:
    return build_upstream_headers(
        list(request.headers.items()), request.scope["state"]["request_id"],
        request.client.host if request.client else None,
    )


def build_job_headers(secret: bytes, pod_url: str, key_hash: str, base_url: str,
                      shared: bool = False) -> list[tuple[bytes, bytes]]:
    """What a pod is told when the router creates a job on it: the pod job id the router chose and
    the router id and base URL the client will know it by (its webhook carries them). Built for
    each pod tried: the pod's URL is part of the signed id. ``shared`` (a shared queue): the id is
    the job id itself, any replica reads it from Redis, and the pod is told which key may read it."""
    pod_job_id = new_job_id()
    public_id = pod_job_id if shared else build_router_job_id(secret, pod_job_id, pod_url, key_hash)
    owner = key_hash if shared else ""
    signature = sign_job_headers(secret, pod_job_id, public_id, base_url, owner)
    headers = [(JOB_ID_HEADER.encode(), pod_job_id.encode()), (PUBLIC_JOB_ID_HEADER.encode(), public_id.encode()),
               (PUBLIC_BASE_URL_HEADER.encode(), base_url.encode("latin-1")),
               (JOB_SIGNATURE_HEADER.encode(), signature.encode())]
    if owner:
        headers.append((JOB_KEY_HASH_HEADER.encode(), owner.encode()))
    return headers


def build_job_answer(status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes, job_id: str,
                     request: Request) -> Response:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers
               if k not in (b"content-type", b"content-length", b"location")}
    if status >= 300:  # the pod's error, as it is
        return Response(body, status, headers, media_type="application/json")
    data = rewrite_job(json.loads(body), job_id, str(request.base_url), serves_files(request.app.state.router))
    if status == 202:
        headers["location"] = data["status_url"]
    return JSONResponse(data, status, headers)


async def relay_job_json(upstream: UpstreamResponse, job_id: str, request: Request) -> Response:
    return build_job_answer(upstream.status_code, upstream.raw_headers, await upstream.read_all(), job_id, request)


@router.post("/v1/jobs", status_code=202, response_model=JobResponse,
             responses=build_error_responses(*BODY_ERRORS, 401, 404, 429, 503, 504, *EDGE_ERRORS),
             openapi_extra=build_body_document(JobRequest))
async def create_job(request: Request, state: StateDep) -> Response:
    body = await request.body()
    model = read_model_name(body, list(state.table.models))
    tenant = read_request_tenant(request)
    # Charged at creation: a job the pod accepts has used its tenant's budget, whatever comes of it.
    charge = await admit_work(state, tenant, model, read_body_fields(body)) if tenant.image_steps_per_minute else None
    try:
        # As /generate: a model at zero starts a pod for it, once the body is known to be a job.
        await state.waiting_room.admit(model, request.is_disconnected, read_client(request),
                                       lambda: check_body(JobRequest, body))
        assert state.forwarder is not None  # the lifespan builds it before the first request
        common, key_hash, base_url = upstream_headers(request), read_key_hash(request), str(request.base_url)
        if state.tenants.by_hash:
            common += build_tenant_headers(tenant, state.job_secret)
        shared = shared_jobs(state) is not None

        def for_pod(pod_url: str) -> list[tuple[bytes, bytes]]:
            return [*common, *build_job_headers(state.job_secret, pod_url, key_hash, base_url, shared)]

        upstream = await state.forwarder.forward(
            model, "/v1/jobs", body, for_pod, request.scope["state"]["request_id"], measure_latency=False,
            adapters=read_adapter_keys(body),
        )
    except BaseException:
        await settle(state, charge, 0)
        raise
    await settle(state, charge, upstream.status_code)
    if upstream.status_code != 202:
        return upstream
    raw = await upstream.read_all()
    if shared:  # the job's own id: every replica reads it from Redis
        return build_job_answer(upstream.status_code, upstream.raw_headers, raw, json.loads(raw)["id"], request)
    # Signed from the pod's answer: the id it was told when it honours the header (a pod of an
    # older version, mid-upgrade, answers its own id: reads still work, only its webhook differs).
    job_id = build_router_job_id(state.job_secret, json.loads(raw)["id"], upstream.origin, key_hash)
    return build_job_answer(upstream.status_code, upstream.raw_headers, raw, job_id, request)


async def to_pod(request: Request, state: RouterState, job_id: str, method: str, tail: str = "") -> UpstreamResponse:
    pod_job_id, pod_url = read_router_job_id(state.job_secret, job_id, read_key_hash(request), state.table.pods)
    assert state.forwarder is not None
    upstream = await state.forwarder.forward_to(
        pod_url or "", method, f"/v1/jobs/{pod_job_id}{tail}", upstream_headers(request),
        request.scope["state"]["request_id"],
    )
    return upstream


def shared_jobs(state: RouterState) -> DurableJobs | None:
    """The shared jobs when there is a Redis: a plain job id is then read from it, by any replica."""
    return state.durable if state.durable is not None and state.durable.queue is not None else None


async def read_shared(request: Request, state: RouterState, job_id: str) -> tuple[DurableJobs, StoredJob] | None:
    """(the shared jobs, the job) for a plain job id with a Redis; None for a router id (a pod's)."""
    durable = shared_jobs(state)
    if durable is None or not JOB_ID.fullmatch(job_id):
        return None
    return durable, await durable.read(job_id, read_key_hash(request) or None)


@router.get("/v1/jobs/{job_id}", response_model=JobResponse, responses=READ_ERRORS)
async def read_job(job_id: str, request: Request, state: StateDep) -> Response:
    shared = await read_shared(request, state, job_id)
    if shared is not None:
        return JSONResponse(await shared[0].render(shared[1], str(request.base_url)))
    upstream = await to_pod(request, state, job_id, "GET")
    return await relay_job_json(upstream, job_id, request)


@router.delete("/v1/jobs/{job_id}", response_model=JobResponse, responses=build_error_responses(409, *READ_STATUSES))
async def cancel_job(job_id: str, request: Request, state: StateDep) -> Response:
    shared = await read_shared(request, state, job_id)
    if shared is not None:
        durable, job = shared
        return JSONResponse(await durable.render(await durable.cancel(job), str(request.base_url)))
    upstream = await to_pod(request, state, job_id, "DELETE")
    return await relay_job_json(upstream, job_id, request)


@router.get("/v1/jobs/{job_id}/events",
            responses={200: {"content": {"text/event-stream": {}}}, **READ_ERRORS, **build_error_responses(429)},
            response_class=Response)
async def stream_job(job_id: str, request: Request, state: StateDep) -> Response:
    shared = await read_shared(request, state, job_id)
    ticket = state.streams.admit(job_id, read_client(request))  # 429 too_many_streams past a bound, before the pod is asked
    if shared is not None:
        events = shared[0].stream(shared[1], parse_stream_event_id(request.headers.get("last-event-id")), KEEPALIVE_SECONDS)
        return TicketedStreamingResponse(ticket, events, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        upstream = await to_pod(request, state, job_id, "GET", "/events")
    except BaseException:
        ticket.release()
        raise
    upstream.also_on_done(ticket.release)
    return upstream  # relayed chunk by chunk as the pod sends them, until the job ends or the client leaves


@router.get("/v1/jobs/{job_id}/images/{index}", responses=build_error_responses(409, *READ_STATUSES),
            response_class=Response)
async def read_job_image(job_id: str, index: int, request: Request, state: StateDep) -> Response:
    shared = await read_shared(request, state, job_id)
    if shared is not None:
        return build_image_response(await shared[0].image(shared[1], index), "private, max-age=3600")
    upstream = await to_pod(request, state, job_id, "GET", f"/images/{index}")
    return upstream


@files_router.get(
    "/v1/files/{key:path}",
    responses={200: {"content": {m: {} for m in ("image/png", "image/jpeg", "image/webp")}},
               **build_error_responses(403, 404, *EDGE_ERRORS)},
    response_class=Response,
)
async def read_file(key: str, request: Request, state: StateDep) -> Response:
    """A job image by its capability URL, from the pods' result directory (``--result-store DIR``,
    the same ReadWriteMany volume): no key needed (no access check on this router), the URL's
    signature and expiry are the permission. With an S3 store, image URLs point at the bucket."""
    if state.durable is None:
        raise ApiError("this router has no --result-store: it serves no image files", 404, "not_found")
    return build_image_response(await state.durable.file(key, request.url.query), "private, max-age=300")
