"""The ConfigMap holding one model's server config (pure)."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from tinyimg.core import labels
from tinyimg.spec import ModelSpec, ServerConfig, merge_server_settings
from tinyimg_operator.objects import CONFIG_FILE, canary_name, configmap_name, object_meta
from tinyimg_operator.settings import C2PA_DIR, ROUTER_SECRET_DIR, SECRET_KEY, WEBHOOK_SECRET_DIR, BuildSettings


def build_server_config_yaml(spec: ModelSpec, settings: BuildSettings | None = None) -> str:
    """What ``tinyimg serve`` reads in the pod: listen on all interfaces, this one model, and the
    server settings: the operator's (the chart's ``server`` value), the model's ``spec.server`` over
    them, and the mounted webhook signing key and router secret where the operator has them.

    ``spec.env`` is left out: it reaches the process as the container's environment, and may hold
    values (tokens, URLs with credentials) that a ConfigMap, readable more widely, must not carry.
    ``replicas`` and ``autoscaling`` are left out too: they are the Deployment's business, and in
    the file they would change the config checksum on the pod template, so ``kubectl scale`` (or a
    new autoscaling bound) would roll every pod."""
    settings = settings or BuildSettings()
    model = spec.model_copy(update={"env": {}, "server": None})
    server = merge_server_settings(settings.server, spec.server)
    if settings.webhook_secret:
        server.setdefault("jobs", {}).setdefault("webhookSecretFile", f"{WEBHOOK_SECRET_DIR}/{SECRET_KEY}")
    if settings.router_secret:
        server["routerSecretFile"] = f"{ROUTER_SECRET_DIR}/{SECRET_KEY}"
    if settings.c2pa_secret:
        server.update({"c2paCertFile": f"{C2PA_DIR}/tls.crt", "c2paKeyFile": f"{C2PA_DIR}/tls.key"})
    wire = {**server, "host": "0.0.0.0", "port": labels.DEFAULT_PORT, "models": [model.to_wire()]}
    config = ServerConfig.model_validate(wire).to_wire()
    for entry in config["models"]:
        entry.pop("replicas", None)
        entry.pop("autoscaling", None)
        entry.pop("rollout", None)  # the operator's business: an edit of it restarts no pod
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


def config_checksum(config_yaml: str) -> str:
    return hashlib.sha256(config_yaml.encode()).hexdigest()


def build_configmap(
    spec: ModelSpec, namespace: str, settings: BuildSettings | None = None, owner: dict[str, Any] | None = None,
    canary: bool = False,
) -> dict[str, Any]:
    """``canary``: the canary Deployment's (tinyimg_operator.rollout), named after it."""
    name = configmap_name(canary_name(spec.name) if canary else spec.name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(name, spec.name, namespace, owner),
        "data": {CONFIG_FILE: build_server_config_yaml(spec, settings)},
    }
