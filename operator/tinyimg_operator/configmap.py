"""The ConfigMap holding one model's server config (pure)."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from tinyimg import labels
from tinyimg.spec import ModelSpec, ServerConfig
from tinyimg_operator.objects import CONFIG_FILE, configmap_name, object_meta


def build_server_config_yaml(spec: ModelSpec) -> str:
    """What ``tinyimg serve`` reads in the pod: listen on all interfaces, this one model.

    ``spec.env`` is left out: it reaches the process as the container's environment, and may hold
    values (tokens, URLs with credentials) that a ConfigMap, readable more widely, must not carry.
    ``replicas`` and ``autoscaling`` are left out too: they are the Deployment's business, and in
    the file they would change the config checksum on the pod template, so ``kubectl scale`` (or a
    new autoscaling bound) would roll every pod."""
    model = spec.model_copy(update={"env": {}})
    config = ServerConfig(host="0.0.0.0", port=labels.DEFAULT_PORT, models=[model]).to_wire()
    for entry in config["models"]:
        entry.pop("replicas", None)
        entry.pop("autoscaling", None)
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


def config_checksum(config_yaml: str) -> str:
    return hashlib.sha256(config_yaml.encode()).hexdigest()


def build_configmap(spec: ModelSpec, namespace: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(configmap_name(spec.name), spec.name, namespace, owner),
        "data": {CONFIG_FILE: build_server_config_yaml(spec)},
    }
