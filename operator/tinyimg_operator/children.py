"""Every object one ImageModel owns, in the order they are applied (pure)."""

from __future__ import annotations

from typing import Any

from tinyimg.spec import ModelSpec
from tinyimg_operator.configmap import build_configmap
from tinyimg_operator.deployment import build_canary_deployment, build_deployment
from tinyimg_operator.service import build_service
from tinyimg_operator.settings import BuildSettings
from tinyimg_operator.storage import build_cache_claim


def build_children(
    spec: ModelSpec, namespace: str, settings: BuildSettings, owner: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """ConfigMap, cache PVC (when sized), Service, then the Deployment that mounts them."""
    settings = settings.for_namespace(namespace)
    claim = build_cache_claim(spec, namespace, owner)
    return [
        build_configmap(spec, namespace, settings, owner),
        *([claim] if claim else []),
        build_service(spec, namespace, owner),
        build_deployment(spec, namespace, settings, owner),
    ]


def build_canary_children(
    spec: ModelSpec, namespace: str, settings: BuildSettings, owner: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A canary revision's ConfigMap and Deployment (tinyimg_operator.rollout)."""
    settings = settings.for_namespace(namespace)
    return [build_configmap(spec, namespace, settings, owner, canary=True),
            build_canary_deployment(spec, namespace, settings, owner)]
