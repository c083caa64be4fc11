"""The model-server Deployment for one ImageModel (pure)."""

from __future__ import annotations

import math
from typing import Any

from tinyimg.core import labels
from tinyimg.core.drain import build_drain_timing
from tinyimg.spec import ModelSpec, without_live_fields
from tinyimg_operator.configmap import build_server_config_yaml, config_checksum
from tinyimg_operator.objects import (
    CACHE_DIR,
    CHECKSUM_ANNOTATION,
    CONFIG_DIR,
    CONFIG_FILE,
    TMP_DIR,
    cache_claim_name,
    canary_name,
    configmap_name,
    object_labels,
    object_meta,
)
from tinyimg_operator.settings import C2PA_DIR, REDIS_PASSWORD_KEY, RESULTS_DIR, SECRET_KEY, BuildSettings

CONTAINER = "server"
GPU_RESOURCE = "nvidia.com/gpu"
USER_ID = 1000
PROBE_PERIOD_SECONDS = 10
TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath, named so both ends agree


def build_deployment(
    spec: ModelSpec, namespace: str, settings: BuildSettings, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    selector = labels.model_server_labels(spec.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(spec.name, spec.name, namespace, owner),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector},
            "strategy": build_strategy(spec),
            "template": {
                "metadata": {
                    "labels": {**object_labels(spec.name), labels.REVISION: spec.weight_revision()},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(labels.DEFAULT_PORT),
                        "prometheus.io/path": "/metrics",
                        # A spec change changes the config, hence the pod template: pods roll. Not
                        # for the live fields (defaults, limits, batching, queue, deadline): the pods
                        # read their mounted config again and apply those without a restart.
                        CHECKSUM_ANNOTATION: config_checksum(build_server_config_yaml(without_live_fields(spec), settings)),
                    },
                },
                "spec": build_pod_spec(spec, settings),
            },
        },
    }


SURGE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
RECREATE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def build_strategy(spec: ModelSpec) -> dict[str, Any]:
    """``rollout.strategy``; unset: replace pods one at a time without a surge pod when the model
    has GPUs (a rollout never needs extra GPUs) or a ReadWriteOnce cache (which never has to attach
    to a surge pod on another node), else start the new pod before the old one stops."""
    if spec.rollout.strategy is not None:
        return dict(SURGE if spec.rollout.strategy == "surge" else RECREATE)
    if spec.resources.gpus or (spec.cache.size and spec.cache.access_mode == "ReadWriteOnce"):
        return dict(RECREATE)
    return dict(SURGE)


def build_canary_deployment(
    spec: ModelSpec, namespace: str, settings: BuildSettings, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The new revision's one pod during a canary rollout (tinyimg_operator.rollout): the model's
    Deployment for ``spec`` under its own name, selector and ConfigMap, its cache on an emptyDir
    (a ReadWriteOnce model cache stays with the running pods; no preload Job fills it)."""
    deployment = build_deployment(spec, namespace, settings, owner)
    deployment["metadata"]["name"] = canary_name(spec.name)
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["selector"]["matchLabels"][labels.TRACK] = labels.TRACK_CANARY
    template = deployment["spec"]["template"]
    template["metadata"]["labels"][labels.TRACK] = labels.TRACK_CANARY
    volumes = template["spec"]["volumes"]
    volumes[:] = [{"name": "config", "configMap": {"name": configmap_name(canary_name(spec.name))}}
                  if v["name"] == "config" else {"name": "cache", "emptyDir": {}} if v["name"] == "cache" else v
                  for v in volumes]
    container = template["spec"]["containers"][0]  # an emptyDir has no preload marker to wait for
    container["env"] = [e for e in container["env"] if e["name"] != labels.PRELOAD_MARKER_ENV]
    return deployment


def build_pod_spec(spec: ModelSpec, settings: BuildSettings) -> dict[str, Any]:
    timing = build_drain_timing([spec.runtime.request_timeout_seconds])
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        # The model server never talks to the Kubernetes API: no token for an intruder to use.
        "automountServiceAccountToken": False,
        # The server's own preStop window (it keeps accepting for a few seconds after SIGTERM while
        # readiness is already 503) + its drain + exit slack: the kubelet never kills accepted work.
        # No preStop hook: the server does that wait itself, so the two never add up.
        "terminationGracePeriodSeconds": timing.grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [build_container(spec, settings)],
        "volumes": [
            {"name": "config", "configMap": {"name": configmap_name(spec.name)}},
            {"name": "tmp", "emptyDir": {}},
            build_cache_volume(spec),
        ],
    }
    for volume, secret, _ in settings.mounted_secrets():
        pod["volumes"].append({"name": volume, "secret": {"secretName": secret, "items": [{"key": SECRET_KEY, "path": SECRET_KEY}]}})
    if settings.results_claim:
        pod["volumes"].append({"name": "results", "persistentVolumeClaim": {"claimName": settings.results_claim}})
    if settings.c2pa_secret:
        pod["volumes"].append({"name": "c2pa-key", "secret": {"secretName": settings.c2pa_secret, "items": [
            {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}})
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [t.to_wire() for t in spec.tolerations]
    return pod


def build_cache_volume(spec: ModelSpec) -> dict[str, Any]:
    if spec.cache.size:
        return {"name": "cache", "persistentVolumeClaim": {"claimName": cache_claim_name(spec.name)}}
    return {"name": "cache", "emptyDir": {}}


def build_container(spec: ModelSpec, settings: BuildSettings) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or settings.server_image,
        "command": ["tinyimg", "serve", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--termination-log", TERMINATION_LOG],
        "ports": [{"name": "http", "containerPort": labels.DEFAULT_PORT, "protocol": "TCP"}],
        "env": build_env(spec, settings),
        "resources": build_resources(spec),
        "startupProbe": _probe("/health/ready", failures=math.ceil(spec.startup_timeout_seconds / PROBE_PERIOD_SECONDS)),
        "readinessProbe": _probe("/health/ready", failures=3, period=5),
        "livenessProbe": _probe("/health", failures=3),
        # The server writes why a model failed to load (a missing source) to the termination
        # message file; the kubelet puts it in the pod's status when the startup probe restarts
        # the container, and the operator into the ImageModel's Degraded condition (pods.py).
        # Should the file stay empty, an error exit leaves its log's tail instead.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_DIR},
            {"name": "cache", "mountPath": CACHE_DIR},
        ],
    }
    for volume, _, path in settings.mounted_secrets():
        container["volumeMounts"].append({"name": volume, "mountPath": path, "readOnly": True})
    if settings.results_claim:
        container["volumeMounts"].append({"name": "results", "mountPath": RESULTS_DIR})
    if settings.c2pa_secret:
        container["volumeMounts"].append({"name": "c2pa-key", "mountPath": C2PA_DIR, "readOnly": True})
    if settings.s3_secret:  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, ...)
        container["envFrom"] = [{"secretRef": {"name": settings.s3_secret}}]
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


INDUCTOR_CACHE, TRITON_CACHE = "torchinductor", "triton"  # directories of the cache volume


def build_env(spec: ModelSpec, settings: BuildSettings) -> list[dict[str, Any]]:
    """HF_HOME and the compile caches on the cache volume, HOME on tmp, HF_TOKEN from the Secret, POD_NAME (the pod's name
    in the shared queue's consumer group), REDIS_PASSWORD from its Secret, then spec.env (which may override).

    The root filesystem is read-only, so HOME points at the writable tmp volume: caches that
    follow HOME (triton's ~/.triton when torch.compile is on, ~/.cache) then still work."""
    env: dict[str, dict[str, Any]] = {
        "HF_HOME": {"name": "HF_HOME", "value": CACHE_DIR},
        # torch.compile's caches beside the weights: with a cache PVC a second pod (and a restart)
        # loads compiled kernels instead of compiling again (runtime.acceleration.compile).
        "TORCHINDUCTOR_CACHE_DIR": {"name": "TORCHINDUCTOR_CACHE_DIR", "value": f"{CACHE_DIR}/{INDUCTOR_CACHE}"},
        "TRITON_CACHE_DIR": {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_DIR}/{TRITON_CACHE}"},
        "HOME": {"name": "HOME", "value": TMP_DIR},
        "POD_NAME": {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # Answers carry it (X-Tinyimg-Revision): which weights made an image, during a canary too.
        "TINYIMG_REVISION": {"name": "TINYIMG_REVISION", "value": spec.weight_revision()},
    }
    env.update(build_otel_env(spec, settings))
    if spec.cache.preload:  # where the preload Job writes its markers (tinyimg_operator.preload); pods wait for theirs
        marker = labels.PRELOAD_MARKER_ENV
        env[marker] = {"name": marker, "value": f"{CACHE_DIR}/{labels.PRELOAD_MARKERS}"}
    if settings.redis_secret:
        ref = {"name": settings.redis_secret, "key": REDIS_PASSWORD_KEY}
        env["REDIS_PASSWORD"] = {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": ref}}
    if spec.hf_token_secret:
        ref = {"name": spec.hf_token_secret.name, "key": spec.hf_token_secret.key}
        env["HF_TOKEN"] = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}
    env.update({k: {"name": k, "value": v} for k, v in spec.env.items()})
    return list(env.values())


def build_otel_env(spec: ModelSpec, settings: BuildSettings) -> dict[str, dict[str, Any]]:
    """The operator's OTEL_* settings for a model pod (none: no traces), with the server's service
    name and the model in its resource attributes (spec.env may still override any of them)."""
    if not settings.otel_env:
        return {}
    given = dict(settings.otel_env)
    model = f"tinyimg.model={spec.name}"
    attributes = ",".join(a for a in (given.get("OTEL_RESOURCE_ATTRIBUTES", ""), model) if a)
    given.update({"OTEL_SERVICE_NAME": "tinyimg-server", "OTEL_RESOURCE_ATTRIBUTES": attributes})
    return {k: {"name": k, "value": v} for k, v in sorted(given.items())}


def build_resources(spec: ModelSpec) -> dict[str, Any]:
    """Requests from the spec; the memory limit is memoryLimit, else the memory request (a model
    server that leaks or loads too much is OOM-killed alone instead of starving its node)."""
    res = spec.resources
    requests = {k: v for k, v in (("cpu", res.cpu), ("memory", res.memory)) if v}
    memory_limit = res.memory_limit or res.memory
    limits: dict[str, Any] = {k: v for k, v in (("cpu", res.cpu_limit), ("memory", memory_limit)) if v}
    if res.gpus:
        limits[GPU_RESOURCE] = str(res.gpus)  # quantities come back from the API as strings
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _probe(path: str, failures: int, period: int = PROBE_PERIOD_SECONDS) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
