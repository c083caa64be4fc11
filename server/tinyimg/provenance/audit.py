"""The audit record of a finished job: who asked (tenant, a prefix of the key's hash, never the
key), for what (model, revision, a hash of the parameters and one of the prompt: never the prompt
itself), and what came out (the SHA-256 of each image, content flags). Pure; the job service logs
it as one JSON line (logger ``tinyimg.audit``) and, with a result store, writes it under each
image's hash (``audit_key``), so ``tinyimg audit verify`` finds an image's job from its bytes alone.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

KEY_ID_LENGTH = 12  # hex digits of the key's SHA-256: tells keys apart, reveals nothing
LEFT_OUT = ("prompt", "negative_prompt")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_document(document: dict[str, Any]) -> str:
    return sha256_hex(json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())


def audit_key(image_sha256: str) -> str:
    """Where the record of the job that made an image lives in the result store."""
    return f"audit/{image_sha256}.json"


def build_audit_record(*, job_id: str, status: str, model: str, revision: str | None, tenant: str,
                       key_hash: str | None, parameters: dict[str, Any], images: list[bytes], seeds: list[int],
                       content_flags: list[Any] | None = None, error_code: str | None = None,
                       finished_at: float | None = None) -> dict[str, Any]:
    prompt = {k: parameters.get(k) for k in LEFT_OUT}
    rest = {k: v for k, v in parameters.items() if k not in LEFT_OUT}
    when = datetime.fromtimestamp(finished_at, UTC) if finished_at is not None else datetime.now(UTC)
    return {
        "time": when.isoformat(timespec="milliseconds"),
        "job_id": job_id,
        "status": status,
        "tenant": tenant,
        "key_id": key_hash[:KEY_ID_LENGTH] if key_hash else None,
        "model": model,
        "revision": revision,
        "parameters_sha256": hash_document(rest),
        "prompt_sha256": hash_document(prompt),
        "images": [{"sha256": sha256_hex(data), "seed": seed} for data, seed in zip(images, seeds, strict=True)],
        "content_flags": content_flags or [],
        "error": error_code,
    }
