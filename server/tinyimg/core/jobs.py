"""What both apps say about jobs on the wire: the id format, the headers a router sets on a job it
creates (and signs), and the errors of a job that is not there.

A pod job id is ``job_`` and 32 hex digits. A router hands its client another id naming the pod
(``tinyimg.router.jobids``) and tells the pod which id and base URL its client knows, in headers it
signs with a secret both share; a pod given that secret believes them from the router only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tinyimg.core.errors import ApiError, InvalidField

log = logging.getLogger("tinyimg.jobs")

TERMINAL = ("succeeded", "failed", "cancelled")
JOB_ID = re.compile(r"^job_[0-9a-f]{32}$")
# Set by the router on a job's creation (DESIGN.md, Jobs), dropped by it from clients' requests:
# the pod job id the router chose, the router id the client gets, and the router's base URL.
JOB_ID_HEADER = "x-tinyimg-job-id"
PUBLIC_JOB_ID_HEADER = "x-tinyimg-public-job-id"
PUBLIC_BASE_URL_HEADER = "x-tinyimg-public-base-url"
JOB_SIGNATURE_HEADER = "x-tinyimg-job-signature"
# With a shared queue (Redis) the router's id is the job id itself, and the job must know which
# key may read it (the router checks keys; its pods have none): the hash of that key.
JOB_KEY_HASH_HEADER = "x-tinyimg-job-key-hash"
JOB_HEADERS = frozenset({JOB_ID_HEADER, PUBLIC_JOB_ID_HEADER, PUBLIC_BASE_URL_HEADER, JOB_SIGNATURE_HEADER,
                         JOB_KEY_HASH_HEADER})
KEY_HASH = re.compile(r"^[0-9a-f]{64}$")
# A router id is ``job_<hex>.<base64url>.<base64url>`` (tinyimg.router.jobids), under 500 characters.
PUBLIC_JOB_ID = re.compile(r"^[A-Za-z0-9._-]{1,1000}$")
MAX_BASE_URL = 2000


def new_job_id() -> str:
    return f"job_{secrets.token_hex(16)}"


def build_job_url(base_url: str, job_id: str, tail: str = "") -> str:
    """Absolute, from the request's own host and base path (a router in front rewrites it)."""
    return f"{base_url.rstrip('/')}/v1/jobs/{job_id}{tail}"


def read_job_secret(path: str, name: str) -> bytes:
    """The router's job secret from a file (``name``: the flag or field that names it, for the
    message): ``tinyimg router --job-secret-file`` and a pod's ``routerSecretFile`` read it alike."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as err:
        raise ValueError(f"{name} {path}: cannot read: {err.strerror or err}") from None
    if len(secret) < 16:
        raise ValueError(f"{name} {path}: the secret must be at least 16 bytes")
    return secret


def sign_job_headers(secret: bytes, job_id: str, public_id: str, base_url: str, key_hash: str = "") -> str:
    """What a router puts in ``x-tinyimg-job-signature``: HMAC-SHA256 with its job secret over the
    job headers, so a pod given the same secret believes them from the router only."""
    message = f"job-headers\n{job_id}\n{public_id}\n{base_url}\n{key_hash}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class JobIdentity:
    """What the router says about a job it creates on a pod (all None for a direct client)."""

    job_id: str | None = None
    public_id: str | None = None
    public_base_url: str | None = None
    key_hash: str | None = None  # the hash of the key that may read it (given with a shared queue)


def read_job_identity(headers: Mapping[str, str], router_secret: bytes | None = None) -> JobIdentity:
    """The router's job headers, checked (422 naming the header when malformed). With the
    router's secret (``routerSecretFile``; the operator mounts it) they are believed only when
    their signature matches, and ignored otherwise (logged: a direct client, or a router with
    another secret, gets a job of the pod's own); without it, from whoever reaches the pod."""
    job_id, public_id, base_url, key_hash = (
        headers.get(h) for h in (JOB_ID_HEADER, PUBLIC_JOB_ID_HEADER, PUBLIC_BASE_URL_HEADER, JOB_KEY_HASH_HEADER))
    if router_secret is not None and (job_id or public_id or base_url or key_hash):
        signature = headers.get(JOB_SIGNATURE_HEADER) or ""
        expected = sign_job_headers(router_secret, job_id or "", public_id or "", base_url or "", key_hash or "")
        if not hmac.compare_digest(signature, expected):
            log.warning("job headers without a valid router signature: ignored", extra={"job_id": job_id})
            return JobIdentity()
    if job_id is not None and not JOB_ID.fullmatch(job_id):
        raise InvalidField(JOB_ID_HEADER, "must be job_ and 32 lowercase hex digits")
    if (public_id is None) != (base_url is None):
        raise InvalidField(PUBLIC_JOB_ID_HEADER, f"comes with {PUBLIC_BASE_URL_HEADER}, both or neither")
    if public_id is not None and not PUBLIC_JOB_ID.fullmatch(public_id):
        raise InvalidField(PUBLIC_JOB_ID_HEADER, "must be 1 to 1000 letters, digits, '.', '_' or '-'")
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(base_url) > MAX_BASE_URL \
                or any(c.isspace() or not c.isprintable() for c in base_url):
            raise InvalidField(PUBLIC_BASE_URL_HEADER, f"must be an http(s) URL of at most {MAX_BASE_URL} characters")
    if key_hash is not None and not KEY_HASH.fullmatch(key_hash):
        raise InvalidField(JOB_KEY_HASH_HEADER, "must be 64 lowercase hex digits (a sha256)")
    return JobIdentity(job_id, public_id, base_url, key_hash)


class JobNotFound(ApiError):
    def __init__(self, job_id: str):
        super().__init__(f"no job {job_id[:80]!r} here", 404, "job_not_found")


class JobExpired(ApiError):
    def __init__(self, job_id: str):
        super().__init__(
            f"job {job_id!r} finished and its result was dropped (result TTL or the result store's size bound)",
            404, "job_expired",
        )
