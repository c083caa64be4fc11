"""The one ImageModel factory of the tests: an object as the API server holds it (apiVersion, kind,
metadata, spec, and a status when given). Tests name only what they are about."""

from __future__ import annotations

from typing import Any


def build_imagemodel(
    name: str = "m", namespace: str | None = None, *, family: str = "sdxl", source: str = "org/model",
    uid: str | None = None, status: dict[str, Any] | None = None, **spec: Any,
) -> dict[str, Any]:
    """``spec``: further spec fields (wire names), over ``family`` and ``source``."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if uid is not None:
        metadata["uid"] = uid
    obj: dict[str, Any] = {"apiVersion": "tinyimg.io/v1alpha1", "kind": "ImageModel", "metadata": metadata,
                           "spec": {"family": family, "source": source, **spec}}
    if status is not None:
        obj["status"] = status
    return obj
