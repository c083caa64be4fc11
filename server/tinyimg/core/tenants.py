"""Tenants: who an API key belongs to, how urgent its work is, and what it may use.

The keys file (server ``apiKeysFile``, router ``--api-keys-file``) is either one key per line (each
key its own tenant, ``standard``, no quotas) or YAML::

    tenants:
      - name: studio            # the metric label and the name /v1/usage answers
        priority: interactive   # interactive | standard | batch
        keys: [sk-studio-1]
        maxQueued: 20           # requests and jobs waiting at once, per model server
        maxInFlight: 2          # running at once, per model server
        imageStepsPerMinute: 600

Work is counted in image-steps: width * height / 1024^2 * steps * images, the cost on the GPU, so a
1024^2, 50-step, 8-image request weighs 100* a 512^2, 4-step one. Only hashes of the keys are kept.

A router tells the pods it forwards to which tenant a request is (``TENANT_HEADER``, signed with
the router's job secret like the job headers), so a pod without a keys file of its own still
queues fairly and holds the same limits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tinyimg.core.auth import KeyFileError, hash_key, match_key, parse_key_lines
from tinyimg.core.errors import ApiError

Priority = Literal["interactive", "standard", "batch"]
# Strict order: a waiting request of a lower rank always starts before one of a higher rank.
PRIORITY_RANK: Mapping[str, int] = {"interactive": 0, "standard": 1, "batch": 2}
DEFAULT_TENANT_NAME = "default"  # who a request is on a server or router without keys
MAX_TENANTS = 1000  # the metric label is bounded by the keys file; so is the file
TENANT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$"
TENANT_HEADER = "x-tinyimg-tenant"
TENANT_SIGNATURE_HEADER = "x-tinyimg-tenant-signature"
TENANT_HEADERS = frozenset({TENANT_HEADER, TENANT_SIGNATURE_HEADER})


# What an Authorization header can carry and the server read back as sent: visible ASCII (a header
# is read as latin-1, so a key with other characters could never match).
KEY_PATTERN = re.compile(r"[\x21-\x7e]+")


def check_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise ValueError("a key is visible ASCII characters only (no spaces): what an Authorization header carries")
    return key


def image_steps(width: int, height: int, steps: int, images: int) -> float:
    """The GPU cost of a request: a 1024^2 image denoised for one step is 1."""
    return width * height / (1024 * 1024) * steps * images


class TenantSpec(BaseModel):
    """One tenant in a YAML keys file (camelCase, as the chart's values)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=TENANT_NAME_PATTERN, description="Lowercase letters, digits, '.', '_', '-' (a metric label).")
    priority: Priority = Field("standard", description="interactive | standard | batch: strict order between classes.")
    keys: list[str] = Field(min_length=1, description="The tenant's API keys (kept only as sha256 hashes).")
    max_queued: int | None = Field(None, alias="maxQueued", ge=0, description="Requests and jobs waiting at once, per model server.")
    max_in_flight: int | None = Field(None, alias="maxInFlight", ge=1, description="Requests and jobs running at once, per model server.")
    image_steps_per_minute: float | None = Field(
        None, alias="imageStepsPerMinute", gt=0,
        description="Work budget (width*height/1024^2*steps*images), refilled continuously; a minute's worth may be spent at once.")
    admin: bool = Field(False, description="Its keys may change what the server holds: register and delete run-time adapters (/v1/adapters).")
    safety_policy: Literal["flag", "blur", "block"] | None = Field(
        None, alias="safetyPolicy",
        description="What a flagged image of this tenant becomes, over each model's safety.policy (models with a content checker).")

    @field_validator("keys")
    @classmethod
    def _keys_are_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            check_key(key)
        return keys


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: list[TenantSpec] = Field(min_length=1, max_length=MAX_TENANTS)


@dataclass(frozen=True)
class Tenant:
    name: str
    priority: Priority = "standard"
    key_hashes: tuple[str, ...] = ()
    max_queued: int | None = None
    max_in_flight: int | None = None
    image_steps_per_minute: float | None = None
    admin: bool = False  # may register and delete run-time adapters (never sent in the tenant header)
    safety_policy: str | None = None  # over the model's safety.policy (tinyimg.safety)

    @property
    def rank(self) -> int:
        return PRIORITY_RANK[self.priority]

    def describe(self) -> dict[str, object]:
        """What /v1/usage and the tenant header say about it (never its keys)."""
        described: dict[str, object] = {"name": self.name, "priority": self.priority, "max_queued": self.max_queued,
                                        "max_in_flight": self.max_in_flight, "image_steps_per_minute": self.image_steps_per_minute}
        if self.safety_policy is not None:
            described["safety_policy"] = self.safety_policy
        return described


DEFAULT_TENANT = Tenant(DEFAULT_TENANT_NAME)


def require_admin(tenant: Tenant, keys_on: bool) -> None:
    """With keys on, only an admin tenant's key changes what a server holds (run-time adapters)."""
    if keys_on and not tenant.admin:
        raise ApiError(f"tenant {tenant.name!r} may not change adapters (not an admin in the keys file)", 403,
                       "admin_required")


def build_key_tenant(key_hash: str) -> Tenant:
    """A key of a plain keys file: its own tenant, named by the start of its hash (never the key);
    an admin (a plain file is one operator's list of keys)."""
    return Tenant(f"key-{key_hash[:12]}", key_hashes=(key_hash,), admin=True)


def build_tenant(spec: TenantSpec) -> Tenant:
    return Tenant(spec.name, spec.priority, tuple(hash_key(k) for k in spec.keys), spec.max_queued,
                  spec.max_in_flight, spec.image_steps_per_minute, spec.admin, spec.safety_policy)


class TenantTable:
    """The tenants of a keys file, found by key in constant time per stored hash."""

    def __init__(self, tenants: Iterable[Tenant]):
        self.tenants = {t.name: t for t in tenants}
        self.by_hash = {h: t for t in self.tenants.values() for h in t.key_hashes}

    @classmethod
    def from_key_hashes(cls, hashes: Iterable[str]) -> TenantTable:
        return cls(build_key_tenant(h) for h in dict.fromkeys(hashes))

    @property
    def key_hashes(self) -> list[str]:
        return list(self.by_hash)

    def match(self, token: str | None) -> Tenant | None:
        """The tenant whose key ``token`` is, or None (every hash compared: ``match_key``)."""
        found = match_key(token, self.key_hashes)
        return self.by_hash[found] if found is not None else None

    def by_key_hash(self, key_hash: str | None) -> Tenant | None:
        return self.by_hash.get(key_hash) if key_hash else None


def parse_tenants(text: str, source: str) -> list[Tenant]:
    """A keys file's tenants: YAML with ``tenants:``, else one key per line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and "tenants" in data:
        try:
            parsed = TenantsFile.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise KeyFileError(f"{source}: {where}: {first['msg']}") from None
        return [build_tenant(spec) for spec in parsed.tenants]
    keys = parse_key_lines(text)
    for number, key in enumerate(keys, 1):
        try:
            check_key(key)
        except ValueError as err:
            raise KeyFileError(f"{source}: key {number}: {err}") from None
    return [build_key_tenant(hash_key(k)) for k in keys]


def check_tenants(tenants: Sequence[Tenant], source: str) -> list[Tenant]:
    """One name per tenant, one tenant per key."""
    names: set[str] = set()
    owners: dict[str, str] = {}
    for tenant in tenants:
        if tenant.name in names:
            raise KeyFileError(f"{source}: tenant {tenant.name!r} is listed twice")
        names.add(tenant.name)
        for key_hash in tenant.key_hashes:
            if key_hash in owners and owners[key_hash] != tenant.name:
                raise KeyFileError(f"{source}: one key belongs to tenants {owners[key_hash]!r} and {tenant.name!r}")
            owners[key_hash] = tenant.name
    if not tenants:
        raise KeyFileError(f"{source}: no API keys in it (one per line, or YAML with tenants:)")
    return list(tenants)


def load_tenants(path: str | Path) -> TenantTable:
    """The tenants of a keys file, or of every file in a directory (a mounted Secret: one file per
    data item; Kubernetes' hidden ``..data`` links are skipped)."""
    path = Path(path)
    try:
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file()) if path.is_dir() else [path]
        tenants = [t for f in files for t in parse_tenants(f.read_text(), str(f))]
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read API keys: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not UTF-8 text") from None
    return TenantTable(check_tenants(tenants, str(path)))


# -- what a router tells a pod ---------------------------------------------------------------


def sign_tenant(secret: bytes, value: str) -> str:
    return hmac.new(secret, f"tenant\n{value}".encode(), hashlib.sha256).hexdigest()


def build_tenant_headers(tenant: Tenant, secret: bytes) -> list[tuple[bytes, bytes]]:
    value = json.dumps(tenant.describe(), separators=(",", ":"), sort_keys=True)
    return [(TENANT_HEADER.encode(), value.encode()), (TENANT_SIGNATURE_HEADER.encode(), sign_tenant(secret, value).encode())]


def read_tenant_header(headers: Mapping[str, str], secret: bytes | None) -> Tenant | None:
    """The tenant a router named, or None: absent, malformed, or (given the router's secret) not
    signed with it. Without a secret it is believed from whoever reaches the pod, as the job
    headers are."""
    value = headers.get(TENANT_HEADER)
    if not value:
        return None
    if secret is not None and not hmac.compare_digest(headers.get(TENANT_SIGNATURE_HEADER) or "", sign_tenant(secret, value)):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return read_tenant_description(data)


def read_tenant_description(data: object) -> Tenant | None:
    """A tenant from what ``Tenant.describe`` said (a router's header, a shared queue's job), or
    None when it is not one."""
    if not isinstance(data, dict):
        return None
    try:
        spec = TenantSpec.model_validate({"name": data.get("name"), "priority": data.get("priority"), "keys": ["-"],
                                          "maxQueued": data.get("max_queued"), "maxInFlight": data.get("max_in_flight"),
                                          "imageStepsPerMinute": data.get("image_steps_per_minute"),
                                          "safetyPolicy": data.get("safety_policy")})
    except ValidationError:
        return None
    return Tenant(spec.name, spec.priority, (), spec.max_queued, spec.max_in_flight, spec.image_steps_per_minute,
                  safety_policy=spec.safety_policy)
