"""Router job ids: the pod's own job id, which pod holds it, and a signature (pure, no I/O).

``<pod job id>.<pod tag>.<base64url HMAC-SHA256>``. The pod tag is a keyed hash of the pod's URL
(HMAC with the router's job secret), so an id names its pod without showing its address: a router
replica with the same secret finds the pod by computing the tag of each pod it knows. The
signature covers the pod job id, the tag and the hash of the API key that created the job: a
client cannot point an id at a pod of its choosing, nor read a job with another key (a wrong key
reads as an unknown id). A well-signed id whose pod no router knows any more is a pod gone.

The router chooses the pod job id (a fresh ``job_<32 hex>``) and builds the id before the pod
answers, so the pod can put it in the job's webhook (routes/jobs.py); one is built per pod tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable

from tinyimg.core.jobs import JobNotFound

# 128 bits of the MAC are plenty for an id that is checked online, one guess per request.
MAC_BYTES = 16
TAG_BYTES = 12
_ROUTER_JOB_ID = re.compile(r"^(job_[0-9a-f]{32})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{22})$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def build_pod_tag(secret: bytes, pod_url: str) -> str:
    return _b64(hmac.new(secret, f"pod\n{pod_url}".encode(), hashlib.sha256).digest()[:TAG_BYTES])


def _mac(secret: bytes, pod_job_id: str, tag: str, key_hash: str) -> str:
    message = f"{pod_job_id}\n{tag}\n{key_hash}".encode()
    return _b64(hmac.new(secret, message, hashlib.sha256).digest()[:MAC_BYTES])


def build_router_job_id(secret: bytes, pod_job_id: str, pod_url: str, key_hash: str) -> str:
    tag = build_pod_tag(secret, pod_url)
    return f"{pod_job_id}.{tag}.{_mac(secret, pod_job_id, tag, key_hash)}"


def read_router_job_id(secret: bytes, job_id: str, key_hash: str, pod_urls: Iterable[str]) -> tuple[str, str | None]:
    """(pod job id, the URL among ``pod_urls`` of the pod that holds it, or None when no known pod
    has its tag: gone), or 404 ``job_not_found`` for anything malformed, forged or signed for
    another key."""
    match = _ROUTER_JOB_ID.fullmatch(job_id)
    if match is None:
        raise JobNotFound(job_id)
    pod_job_id, tag, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(secret, pod_job_id, tag, key_hash)):
        raise JobNotFound(job_id)
    return pod_job_id, next((url for url in pod_urls if hmac.compare_digest(build_pod_tag(secret, url), tag)), None)
