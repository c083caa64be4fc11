"""LoRA adapters fetched at run time: a request names one by URL with its SHA-256 (``loras: [{url,
sha256, scale}]``), or by a name an admin registered (``POST /v1/adapters``).

Before a request is queued, ``AdapterLibrary.fetch`` makes sure the file is on local disk: from
the cache when it is there, else downloaded on the event loop (never on a device thread) while
its SHA-256 is computed, into a temporary file renamed into place only when the hash matches.
Files are content-addressed (``<root>/<model>/<sha256>.safetensors``), so one URL fetched by many
requests at once is downloaded once, and a changed file behind the same URL is a different
adapter. The cache is bounded per model (``adapterSources.maxCacheBytes``): the least recently
used files go first. The device thread then loads the file into the pipeline when a batch first
names it (``tinyimg.families.variants``).

URLs: ``https://host/path`` (``http://`` only with ``adapterSources.allowHttp``),
``hf://org/repo[@revision]/path/in/repo`` (from huggingface.co, or ``HF_ENDPOINT``; ``HF_TOKEN``
is sent for gated repos) and ``s3://bucket/key`` (the jobs' S3 endpoint and credentials, else
the ``AWS_*`` environment). The host (the bucket for s3://) must be on the model's
``adapterSources.allowedHosts``; every refusal is a 422 naming the field.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from tinyimg.core.errors import InvalidField
from tinyimg.families.base import AdapterFile
from tinyimg.spec import AdapterSourcesSpec, ModelSpec
from tinyimg.wire.requests import LoraRequest

if TYPE_CHECKING:
    from obstore.store import ClientConfig

log = logging.getLogger("tinyimg.adapters")

CHUNK_BYTES = 1 << 20
FETCH_TIMEOUT_SECONDS = 30.0  # connect, and between two chunks
FETCH_DEADLINE_SECONDS = 900.0  # one whole download: an origin that trickles is given up on
MAX_CONCURRENT_DOWNLOADS = 4  # per process: each may hold up to maxAdapterBytes on disk while it runs
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
# Registered adapters per model: a bound on what admins can make a pod remember.
MAX_REGISTERED = 1000


@dataclass(frozen=True)
class AdapterLocation:
    """Where an adapter URL points, once checked: ``fetch_url`` for http(s) and hf, or
    ``bucket``/``key`` for s3."""

    scheme: str
    host: str
    fetch_url: str = ""
    bucket: str = ""
    key: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/")


def check_adapter_url(url: str, sources: AdapterSourcesSpec, field_path: str) -> AdapterLocation:
    """Where ``url`` points, or a 422 naming ``field_path`` and why (pure: no DNS, no I/O)."""
    if not sources.allowed_hosts:
        raise InvalidField(field_path, "adapters by URL are off for this model (no adapterSources.allowedHosts)")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidField(field_path, "must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InvalidField(field_path, f"not a valid URL: {err}") from None
    schemes = ("https", "hf", "s3", "http") if sources.allow_http else ("https", "hf", "s3")
    if parts.scheme not in schemes:
        raise InvalidField(field_path, f"scheme {parts.scheme or '(none)'!r} is not one of {', '.join(schemes)}")
    if parts.username or parts.password:
        raise InvalidField(field_path, "must not carry credentials")
    if parts.scheme == "hf":
        return check_host(build_hf_location(parts.netloc + parts.path, field_path), sources, field_path)
    if not parts.hostname or port == 0:
        raise InvalidField(field_path, "needs a host")
    if parts.scheme == "s3":
        key = parts.path.lstrip("/")
        if not key or parts.query or port is not None:
            raise InvalidField(field_path, "expected s3://BUCKET/KEY")
        return check_host(AdapterLocation("s3", parts.hostname.lower(), bucket=parts.hostname, key=key), sources, field_path)
    host = parts.hostname.lower() + (f":{port}" if port is not None else "")
    return check_host(AdapterLocation(parts.scheme, host, fetch_url=url), sources, field_path)


def check_host(location: AdapterLocation, sources: AdapterSourcesSpec, field_path: str) -> AdapterLocation:
    """An https:// URL with the default port matches a listed host with or without ``:443``."""
    host = location.host
    default_port = {"https": ":443", "http": ":80"}.get(location.scheme, "")
    candidates = {host, host.removesuffix(default_port)} if default_port else {host}
    if not candidates & set(sources.allowed_hosts):
        raise InvalidField(field_path, f"host {host!r} is not on this model's adapterSources.allowedHosts")
    return location


def build_hf_location(path: str, field_path: str) -> AdapterLocation:
    """``org/repo[@revision]/path/in/repo`` -> the file's resolve URL on the Hub."""
    segments = path.split("/")
    if len(segments) < 3 or not all(segments):
        raise InvalidField(field_path, "expected hf://ORG/REPO[@REVISION]/PATH/IN/REPO")
    name, _, revision = segments[1].partition("@")
    endpoint = hf_endpoint()
    fetch_url = f"{endpoint}/{segments[0]}/{name}/resolve/{quote(revision or 'main', safe='')}/{'/'.join(segments[2:])}"
    token = os.environ.get("HF_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return AdapterLocation("hf", urlsplit(endpoint).netloc.lower(), fetch_url=fetch_url, headers=headers)


@dataclass(frozen=True)
class Registration:
    """An adapter an admin registered for a model: requests name it by ``name``."""

    name: str
    url: str
    sha256: str
    scale: float
    registered_at: float


class AdapterLibrary:
    """The adapter files of this process, on disk, and the adapters registered by name."""

    def __init__(self, root: Path, s3_options: Mapping[str, Any] | None = None,
                 on_fetch: Callable[[str, str, int], None] | None = None):
        """``s3_options``: S3Store's endpoint and region for s3:// URLs (the jobs' store's).
        ``on_fetch(model, outcome, bytes)``: each fetch's outcome (downloaded, cached, failed)."""
        self.root = root
        self.s3_options = dict(s3_options or {})
        self.on_fetch = on_fetch
        self.registered: dict[str, dict[str, Registration]] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._client: httpx.AsyncClient | None = None
        self._downloads: asyncio.Semaphore | None = None  # made on the event loop that uses it

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def path_for(self, model: str, sha256: str) -> Path:
        return self.root / model / f"{sha256}.safetensors"

    # -- a request's adapters ---------------------------------------------------------------
    async def fetch_request(self, loras: list[LoraRequest] | None, spec: ModelSpec) -> dict[int, tuple[AdapterFile, float]]:
        """The run-time adapters a request names (index in ``loras`` -> file and default scale),
        fetched; declared adapters are not here (they load with the model)."""
        if loras and len(loras) > spec.limits.max_adapters:  # before any download
            raise InvalidField("loras", f"{len(loras)} adapters is over this model's maximum of {spec.limits.max_adapters}")
        out: dict[int, tuple[AdapterFile, float]] = {}
        declared = {a.name for a in spec.adapters}
        registered = self.registered.get(spec.name, {})
        for index, lora in enumerate(loras or []):
            if lora.url is not None:
                assert lora.sha256 is not None  # LoraRequest requires it with url
                out[index] = (await self.fetch(spec, lora.url, lora.sha256, f"loras.{index}"), 1.0)
            elif lora.name not in declared and lora.name in registered:
                entry = registered[lora.name]
                file = await self.fetch(spec, entry.url, entry.sha256, f"loras.{index}", label=entry.name)
                out[index] = (file, entry.scale)
        return out

    async def fetch(self, spec: ModelSpec, url: str, sha256: str, field_path: str, label: str | None = None) -> AdapterFile:
        """The adapter file of ``url``, checked against ``sha256``: from the disk cache, or
        downloaded once however many requests ask at the same time."""
        location = check_adapter_url(url, spec.adapter_sources, f"{field_path}.url")
        sha256 = sha256.lower()
        path = self.path_for(spec.name, sha256)
        file = AdapterFile(build_adapter_name(sha256), str(path), sha256, label or url)
        if path.is_file():
            touch(path)
            self._count(spec.name, "cached", 0)
            return file
        key = (spec.name, sha256)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._download(spec, location, sha256, path, field_path))
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        await asyncio.shield(pending)
        return file

    async def _download(self, spec: ModelSpec, location: AdapterLocation, sha256: str, path: Path, field_path: str) -> None:
        if self._downloads is None:
            self._downloads = asyncio.Semaphore(MAX_CONCURRENT_DOWNLOADS)
        async with self._downloads:
            try:
                async with asyncio.timeout(FETCH_DEADLINE_SECONDS):
                    await self._download_now(spec, location, sha256, path, field_path)
            except TimeoutError:
                raise InvalidField(f"{field_path}.url", f"the download took over {FETCH_DEADLINE_SECONDS:.0f} s") from None

    async def _download_now(self, spec: ModelSpec, location: AdapterLocation, sha256: str, path: Path, field_path: str) -> None:
        started = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{sha256}.{os.getpid()}.{id(location)}.partial")
        limit = spec.adapter_sources.max_adapter_bytes
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as out:
                async for chunk in self._read(location, limit, f"{field_path}.url"):
                    size += len(chunk)
                    if size > limit:
                        raise InvalidField(f"{field_path}.url", f"the file is over this model's maximum of {limit} bytes (adapterSources.maxAdapterBytes)")
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise InvalidField(f"{field_path}.sha256", f"the file at url has SHA-256 {digest.hexdigest()}, not {sha256}")
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            self._count(spec.name, "failed", size)
            raise
        self._count(spec.name, "downloaded", size)
        log.info("adapter fetched", extra={"model": spec.name, "sha256": sha256, "bytes": size, "scheme": location.scheme,
                                           "seconds": round(time.perf_counter() - started, 4)})
        evict_cache(path.parent, spec.adapter_sources.max_cache_bytes, keep=path)

    async def _read(self, location: AdapterLocation, limit: int, field_path: str) -> Any:
        if location.scheme == "s3":
            async for chunk in self._read_s3(location, field_path):
                yield chunk
            return
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=True, max_redirects=5,
                                             timeout=httpx.Timeout(FETCH_TIMEOUT_SECONDS))
        try:
            async with self._client.stream("GET", location.fetch_url, headers=dict(location.headers)) as response:
                if response.status_code != 200:
                    raise InvalidField(field_path, f"fetching it answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise InvalidField(field_path, f"the file ({declared} bytes) is over this model's maximum of {limit} bytes (adapterSources.maxAdapterBytes)")
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    yield chunk
        except httpx.HTTPError as err:
            raise InvalidField(field_path, f"could not be fetched: {type(err).__name__}: {err}") from None

    async def _read_s3(self, location: AdapterLocation, field_path: str) -> Any:
        import obstore
        from obstore.store import S3Store

        endpoint = self.s3_options.get("endpoint")
        client: ClientConfig | None = {"allow_http": True} if isinstance(endpoint, str) and endpoint.startswith("http://") else None
        store = S3Store(location.bucket, client_options=client, **self.s3_options)
        try:
            result = await obstore.get_async(store, location.key)
            async for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
                yield bytes(chunk)
        except Exception as err:  # obstore's own kinds: not found, denied, network
            raise InvalidField(field_path, f"could not be fetched: {type(err).__name__}: {err}") from None

    def _count(self, model: str, outcome: str, size: int) -> None:
        if self.on_fetch is not None:
            self.on_fetch(model, outcome, size)

    # -- registered adapters ----------------------------------------------------------------
    async def register(self, spec: ModelSpec, name: str, url: str, sha256: str, scale: float) -> Registration:
        """Fetch the file now (so a bad URL or hash is the admin's 422, not a later request's),
        then requests may name it."""
        if name in {a.name for a in spec.adapters}:
            raise InvalidField("name", f"adapter {name!r} is declared in the model's spec; choose another name")
        entries = self.registered.setdefault(spec.name, {})
        if name not in entries and len(entries) >= MAX_REGISTERED:
            raise InvalidField("name", f"model {spec.name!r} has {MAX_REGISTERED} registered adapters; delete some first")
        await self.fetch(spec, url, sha256, "adapter", label=name)
        entry = entries[name] = Registration(name, url, sha256.lower(), scale, time.time())
        return entry

    def unregister(self, model: str, name: str) -> Registration | None:
        return self.registered.get(model, {}).pop(name, None)


def build_adapter_name(sha256: str) -> str:
    """What the pipeline holds a run-time adapter as: from its content, so equal names are equal
    adapters (a valid peft adapter name: no dots)."""
    return f"sha256_{sha256[:32]}"


def touch(path: Path) -> None:
    """Mark a cached file as just used (the cache drops the least recently used first)."""
    try:
        os.utime(path)
    except OSError:
        pass


def evict_cache(directory: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used adapter files of ``directory`` until it holds at most
    ``max_bytes`` (never ``keep``, the file just fetched). Returns what was deleted."""
    files = []
    for path in directory.glob("*.safetensors"):
        try:
            stat = path.stat()
        except OSError:
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    deleted = []
    for _, size, path in sorted(files):
        if total <= max_bytes:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    return deleted
