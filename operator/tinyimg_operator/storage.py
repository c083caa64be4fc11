"""The model-cache PersistentVolumeClaim, built only when the spec sizes one (pure)."""

from __future__ import annotations

from typing import Any

from tinyimg.spec import ModelSpec
from tinyimg_operator.objects import cache_claim_name, object_meta


def build_cache_claim(spec: ModelSpec, namespace: str, owner: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if not spec.cache.size:
        return None
    claim_spec: dict[str, Any] = {
        "accessModes": [spec.cache.access_mode],
        "resources": {"requests": {"storage": spec.cache.size}},
    }
    if spec.cache.storage_class_name:
        claim_spec["storageClassName"] = spec.cache.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(cache_claim_name(spec.name), spec.name, namespace, owner),
        "spec": claim_spec,
    }
