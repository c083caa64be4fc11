"""The ClusterIP Service in front of one model's pods (pure)."""

from __future__ import annotations

from typing import Any

from tinyimg.core import labels
from tinyimg.spec import ModelSpec
from tinyimg_operator.objects import object_meta


def build_service(spec: ModelSpec, namespace: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(spec.name, spec.name, namespace, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": labels.model_server_labels(spec.name),
            "ports": [{"name": "http", "port": labels.DEFAULT_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
