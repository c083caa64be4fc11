"""Names and metadata every object built for one ImageModel shares (pure)."""

from __future__ import annotations

from typing import Any

from tinyimg.core import labels

API_VERSION = f"{labels.GROUP}/{labels.VERSION}"
CONFIG_FILE = "config.yaml"
CONFIG_DIR = "/etc/tinyimg"
CACHE_DIR = "/var/cache/huggingface"
TMP_DIR = "/tmp"
CHECKSUM_ANNOTATION = f"{labels.GROUP}/config-checksum"


def configmap_name(model: str) -> str:
    return f"{model}-config"


def canary_name(model: str) -> str:
    """The canary Deployment of a model (and, as a model name, its ConfigMap's prefix)."""
    return f"{model}-canary"


def cache_claim_name(model: str) -> str:
    return f"{model}-cache"


def service_url(model: str, namespace: str) -> str:
    return f"http://{model}.{namespace}.svc.cluster.local:{labels.DEFAULT_PORT}"


def selector_string(model: str) -> str:
    """The pod selector as a label-selector string (what the scale subresource reports)."""
    return ",".join(f"{k}={v}" for k, v in labels.model_server_labels(model).items())


def object_labels(model: str) -> dict[str, str]:
    return {**labels.model_server_labels(model), labels.MANAGED_BY: labels.OPERATOR_NAME}


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": labels.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(name: str, model: str, namespace: str, owner: dict[str, Any] | None) -> dict[str, Any]:
    """Metadata of a child; ``owner`` is the ImageModel body (no ownerReference while it has no uid)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": object_labels(model)}
    if owner is not None and owner.get("metadata", {}).get("uid"):
        meta["ownerReferences"] = [owner_reference(owner)]
    return meta
