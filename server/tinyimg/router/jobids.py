"""Router job ids: the pod's own job id, which pod holds it, and a signature (pure, no I/O).

``<pod job id>.<base64url pod URL>.<base64url HMAC-SHA256>``, signed with the router's job secret
over the pod job id, the pod URL and the hash of the API key that created the job. So any router
replica with the same secret resolves an id without shared state; a client cannot point an id at
a pod of its choosing (the signature would not match), nor read a job with another key (the key
is part of what is signed: a wrong key reads as an unknown id).

The router chooses the pod job id (a fresh ``job_<32 hex>``) and builds the id before the pod
answers, so the pod can put it in the job's webhook (routes/jobs.py); one is built per pod tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from tinyimg.runtime.jobstore import JobNotFound

# 128 bits of the MAC are plenty for an id that is checked online, one guess per request.
MAC_BYTES = 16
_ROUTER_JOB_ID = re.compile(r"^(job_[0-9a-f]{32})\.([A-Za-z0-9_-]{1,400})\.([A-Za-z0-9_-]{22})$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, pod_job_id: str, pod_url: str, key_hash: str) -> str:
    message = f"{pod_job_id}\n{pod_url}\n{key_hash}".encode()
    return _b64(hmac.new(secret, message, hashlib.sha256).digest()[:MAC_BYTES])


def build_router_job_id(secret: bytes, pod_job_id: str, pod_url: str, key_hash: str) -> str:
    return f"{pod_job_id}.{_b64(pod_url.encode())}.{_mac(secret, pod_job_id, pod_url, key_hash)}"


def read_router_job_id(secret: bytes, job_id: str, key_hash: str) -> tuple[str, str]:
    """(pod job id, pod URL), or 404 ``job_not_found`` for anything malformed, forged or
    signed for another key."""
    match = _ROUTER_JOB_ID.fullmatch(job_id)
    if match is None:
        raise JobNotFound(job_id)
    pod_job_id, pod_part, mac = match.groups()
    try:
        pod_url = _unb64(pod_part).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise JobNotFound(job_id) from None
    if not hmac.compare_digest(mac, _mac(secret, pod_job_id, pod_url, key_hash)):
        raise JobNotFound(job_id)
    return pod_job_id, pod_url
