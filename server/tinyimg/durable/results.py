"""The result store: each finished job's images and its record, written once, read by anyone holding
a capability URL, dropped by the store's own TTL sweep (not by a pod's memory).

Two backends, one interface (``ResultStore``):
- ``DirResultStore``: a directory; on one machine the default (``.tinyimg/results``), in a cluster
  a ReadWriteMany volume mounted by every model pod and the router. Its URLs are
  ``/v1/files/<key>?expires=<unix time>&sig=<HMAC>``, signed with a secret kept in the directory
  itself (``.url-secret``, made on first use), so every process that mounts it signs and checks alike.
- ``S3ResultStore``: an S3-compatible bucket through ``obstore`` (AWS S3, GCS interoperability,
  MinIO, R2); its URLs are the service's own presigned GETs. Imported only when configured.

Keys: ``jobs/<job id>/<index>.<format>`` for images and ``jobs/<job id>/job.json`` for the record.
A key is a function of the job id and the index, so a job taken again after its pod died writes
the same objects again, never a second set.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from tinyimg.core.errors import ApiError

if TYPE_CHECKING:
    from obstore.store import ClientConfig

# What a /v1/files URL may name: images only (a job's record holds its key's hash).
IMAGE_KEY = re.compile(r"^jobs/job_[0-9a-f]{32}/[0-9]{1,3}\.(png|jpeg|webp)$")
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
SECRET_FILE = ".url-secret"
MAX_EXPIRES_DIGITS = 12


def image_key(job_id: str, index: int, output_format: str) -> str:
    return f"jobs/{job_id}/{index}.{output_format}"


def record_key(job_id: str) -> str:
    return f"jobs/{job_id}/job.json"


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)


class StorageUnavailable(ApiError):
    def __init__(self, what: str, err: BaseException | str):
        super().__init__(f"the result store cannot {what}: {err}", 503, "storage_unavailable", retry_after=5)


class UrlExpired(ApiError):
    def __init__(self) -> None:
        super().__init__("this image URL has expired; read the job again for a fresh one", 403, "url_expired")


class UrlInvalid(ApiError):
    def __init__(self) -> None:
        super().__init__("this image URL is not valid (its signature does not match)", 403, "url_invalid")


class ResultStore(Protocol):
    """Where results live. Every method raises ``StorageUnavailable`` when the store cannot be reached."""

    description: str
    writes: int  # objects written, and writes that failed (for /metrics)
    write_failures: int

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None: ...
    async def get(self, key: str) -> StoredObject | None: ...
    async def url(self, key: str, base_url: str, ttl_seconds: int) -> str: ...
    async def sweep(self, ttl_seconds: float) -> int: ...


def sign_file(secret: bytes, key: str, expires: int) -> str:
    mac = hmac.new(secret, f"file\n{key}\n{expires}".encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(mac).decode("ascii")


def check_file_signature(secret: bytes, key: str, query: str, now: float) -> None:
    """403 ``url_invalid`` unless ``query`` carries this key's signature; 403 ``url_expired`` once
    past its expiry (checked after the signature: an altered expiry is invalid, not expired)."""
    try:
        params = parse_qs(query, keep_blank_values=True, max_num_fields=8)
    except ValueError:  # more fields than a URL of ours has
        raise UrlInvalid() from None
    expires_s, sig = params.get("expires", [""])[0], params.get("sig", [""])[0]
    if not expires_s.isascii() or not expires_s.isdigit() or len(expires_s) > MAX_EXPIRES_DIGITS:
        raise UrlInvalid()
    if not hmac.compare_digest(sig.encode("utf-8", "replace"), sign_file(secret, key, int(expires_s)).encode()):
        raise UrlInvalid()
    if int(expires_s) < now:
        raise UrlExpired()


def build_file_url(secret: bytes, key: str, base_url: str, ttl_seconds: int, now: float) -> str:
    """Valid for at least ``ttl_seconds`` from ``now`` (the expiry is a whole second, rounded up)."""
    expires = math.ceil(now) + ttl_seconds
    query = urlencode({"expires": expires, "sig": sign_file(secret, key, expires)})
    return f"{base_url.rstrip('/')}/v1/files/{quote(key)}?{query}"


def load_url_secret(root: Path) -> bytes:
    """The directory's signing secret, made once (O_EXCL: two processes starting together agree)."""
    path = root / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process is writing it right now
            secret = path.read_bytes()
            if len(secret) >= 32:
                return secret
            time.sleep(0.01)
        raise ValueError(f"{path}: shorter than 32 bytes; delete it to make a new one") from None
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    return path.read_bytes()


class DirResultStore:
    def __init__(self, root: str | Path, clock: Callable[[], float] = time.time):
        self.root = Path(root).resolve()
        self.clock = clock
        self.writes = self.write_failures = 0
        self.description = f"dir {self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.secret = load_url_secret(self.root)
        except OSError as err:
            raise ValueError(f"jobs.resultStore.dir {root}: cannot use: {err.strerror or err}") from None

    def _path(self, key: str) -> Path:
        return self.root / key

    def _write(self, key: str, data: bytes, meta: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, content in ((path.with_name(path.name + ".meta"), json.dumps(meta).encode()), (path, data)):
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(content)
            os.replace(tmp, target)  # readers see the old object or the new one, never half of one

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None:
        try:
            await asyncio.to_thread(self._write, key, data, {"content_type": content_type, "metadata": metadata})
        except OSError as err:
            self.write_failures += 1
            raise StorageUnavailable(f"write {key}", err.strerror or err) from None
        self.writes += 1

    def _read(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
            meta = json.loads(path.with_name(path.name + ".meta").read_bytes())
        except FileNotFoundError:
            return None
        return StoredObject(data, meta["content_type"], meta.get("metadata", {}))

    async def get(self, key: str) -> StoredObject | None:
        try:
            return await asyncio.to_thread(self._read, key)
        except (OSError, ValueError) as err:
            raise StorageUnavailable(f"read {key}", err) from None

    async def url(self, key: str, base_url: str, ttl_seconds: int) -> str:
        return build_file_url(self.secret, key, base_url, ttl_seconds, self.clock())

    def check(self, key: str, query: str) -> None:
        check_file_signature(self.secret, key, query, self.clock())

    def _sweep(self, ttl_seconds: float) -> int:
        cutoff, removed = self.clock() - ttl_seconds, 0
        jobs = self.root / "jobs"
        for job_dir in jobs.iterdir() if jobs.is_dir() else ():
            record = job_dir / "job.json"
            try:
                stamp = record.stat().st_mtime if record.exists() else job_dir.stat().st_mtime
            except FileNotFoundError:
                continue
            if stamp < cutoff:
                shutil.rmtree(job_dir, ignore_errors=True)
                removed += 1
        return removed

    async def sweep(self, ttl_seconds: float) -> int:
        """Jobs whose record was written more than ``ttl_seconds`` ago leave the directory."""
        return await asyncio.to_thread(self._sweep, ttl_seconds)


class S3ResultStore:
    def __init__(self, bucket: str, endpoint: str | None = None, region: str = "us-east-1", prefix: str = ""):
        from obstore.store import S3Store

        options: dict[str, Any] = {"region": region}
        if endpoint is not None:
            options["endpoint"] = endpoint
        client: ClientConfig | None = {"allow_http": True} if endpoint and endpoint.startswith("http://") else None
        self.writes = self.write_failures = 0
        self.store = S3Store(bucket, prefix=prefix.strip("/") or None, client_options=client, **options)
        self.description = f"s3 {bucket}{'/' + prefix.strip('/') if prefix.strip('/') else ''}" + (
            f" at {endpoint}" if endpoint else "")

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None:
        import obstore

        try:
            await obstore.put_async(self.store, key, data, attributes={"Content-Type": content_type, **metadata})
        except Exception as err:  # obstore raises its own kinds for network, auth and service errors
            self.write_failures += 1
            raise StorageUnavailable(f"write {key}", err) from None
        self.writes += 1

    async def get(self, key: str) -> StoredObject | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            result = await obstore.get_async(self.store, key)
            data = bytes(await result.bytes_async())
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as err:
            raise StorageUnavailable(f"read {key}", err) from None
        attributes = {str(k): str(v) for k, v in result.attributes.items()}
        return StoredObject(data, attributes.pop("Content-Type", "application/octet-stream"), attributes)

    async def url(self, key: str, base_url: str, ttl_seconds: int) -> str:
        import obstore

        try:
            return await obstore.sign_async(self.store, "GET", key, timedelta(seconds=ttl_seconds))
        except Exception as err:
            raise StorageUnavailable(f"sign a URL for {key}", err) from None

    async def sweep(self, ttl_seconds: float) -> int:
        """Objects older than ``ttl_seconds`` are deleted (a bucket lifecycle rule does the same
        server-side; this keeps the TTL where no rule was set)."""
        import obstore

        cutoff, old = time.time() - ttl_seconds, []
        try:
            async for batch in obstore.list(self.store, "jobs/"):
                old += [o["path"] for o in batch if o["last_modified"].timestamp() < cutoff]
            if old:
                await obstore.delete_async(self.store, old)
        except Exception as err:
            raise StorageUnavailable("sweep expired results", err) from None
        return len({p.rsplit("/", 1)[0] for p in old})


def build_result_store(spec: Any) -> ResultStore:
    """The store a ``jobs.resultStore`` (``ResultStoreSpec``) names; ValueError when unusable."""
    if spec.s3 is not None:
        s3 = spec.s3
        return S3ResultStore(s3.bucket, s3.endpoint, s3.region, s3.prefix)
    return DirResultStore(spec.dir)


def parse_result_store_url(value: str) -> ResultStore:
    """The router's ``--result-store``: a directory path, or ``s3://bucket/prefix?endpoint=..&region=..``."""
    if not value.startswith("s3://"):
        return DirResultStore(value)
    parts = urlsplit(value)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"endpoint", "region"}
    if not parts.netloc or unknown:
        raise ValueError(f"--result-store {value}: expected s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]")
    return S3ResultStore(parts.netloc, query.get("endpoint"), query.get("region", "us-east-1"), parts.path.strip("/"))


def read_image_key(path_key: str) -> str:
    """The key a ``/v1/files/<key>`` URL names, or 403 ``url_invalid`` (only job images are served)."""
    if not IMAGE_KEY.fullmatch(path_key):
        raise UrlInvalid()
    return path_key
