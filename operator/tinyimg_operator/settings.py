"""Operator settings that shape what is built, read from the environment in one place."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from tinyimg.spec import PodServerSettings

DEFAULT_SERVER_IMAGE = "ghcr.io/tinyimg/tinyimg-server:0.1.0"
SECRET_KEY = "secret"  # the key of every Secret a model pod mounts
WEBHOOK_SECRET_DIR = "/etc/tinyimg/webhook"
ROUTER_SECRET_DIR = "/etc/tinyimg/router"
RESULTS_DIR = "/var/lib/tinyimg/results"
C2PA_DIR = "/etc/tinyimg/c2pa"  # where the C2PA signing Secret (kubernetes.io/tls: tls.crt, tls.key) is mounted  # where a shared results claim is mounted (jobs.resultStore.dir)
REDIS_PASSWORD_KEY = "password"  # the key of the Redis password Secret
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class BuildSettings:
    server_image: str = DEFAULT_SERVER_IMAGE
    image_pull_policy: str | None = None
    # Images an ImageModel's spec.image may name (see image_allowed); empty: only server_image.
    allowed_images: tuple[str, ...] = ()
    builtin_autoscaler: bool = True  # False: spec.autoscaling is left to an external autoscaler (HPA/KEDA)
    # Server settings for every model pod (the chart's `server` value); a model's spec.server wins.
    server: PodServerSettings | None = None
    # A Secret (key `secret`) in each model's namespace with the webhook signing key: mounted into
    # model pods, and jobs.webhookSecretFile points at it.
    webhook_secret: str | None = None
    # The router's job secret (the chart's <release>-router-jobs Secret, key `secret`): mounted into
    # model pods as routerSecretFile, so they believe job headers from the router only.
    router_secret: str | None = None

    # Durable jobs (the chart's redis and storage values): the Secret with the Redis password (key
    # `password`, as REDIS_PASSWORD), the Secret with S3 credentials (its keys as environment
    # variables: AWS_ACCESS_KEY_ID, ...), and a ReadWriteMany claim mounted at RESULTS_DIR.
    redis_secret: str | None = None
    s3_secret: str | None = None
    results_claim: str | None = None
    # A kubernetes.io/tls Secret (tls.crt: the certificate chain, tls.key: its key) that signs the
    # C2PA manifests of models with provenance.c2pa: mounted into their pods at C2PA_DIR.
    c2pa_secret: str | None = None

    # Where those Secrets live (the operator's own namespace): a pod can mount only a Secret
    # of its own namespace, so models elsewhere get none (and no webhooks: no key to sign with;
    # no shared jobs: no password, credentials or claim to reach them with).
    secrets_namespace: str | None = None
    # The operator's own OTEL_* environment but OTEL_SERVICE_NAME (the chart's `tracing.env`),
    # passed on to every model pod: traces from the router, the operator and the pods go to one place.
    otel_env: tuple[tuple[str, str], ...] = ()

    def for_namespace(self, namespace: str) -> BuildSettings:
        """The settings for a model in ``namespace``: without the Secrets when they live elsewhere."""
        held = (self.webhook_secret, self.router_secret, self.redis_secret, self.s3_secret, self.results_claim,
                self.c2pa_secret)
        if self.secrets_namespace in (None, namespace) or not any(held):
            return self
        server = self.server
        if server is not None and server.jobs is not None:
            jobs = server.jobs.model_copy(update={"webhook_allowed_hosts": None, "redis_url": None, "result_store": None})
            server = server.model_copy(update={"jobs": jobs})
        return replace(self, webhook_secret=None, router_secret=None, redis_secret=None, s3_secret=None,
                       results_claim=None, c2pa_secret=None, server=server)

    def mounted_secrets(self) -> list[tuple[str, str, str]]:
        """(volume name, Secret name, mount directory) of each Secret model pods mount (key `secret`)."""
        found = [("webhook-secret", self.webhook_secret, WEBHOOK_SECRET_DIR), ("router-secret", self.router_secret, ROUTER_SECRET_DIR)]
        return [(volume, secret, path) for volume, secret, path in found if secret]

    def image_allowed(self, image: str) -> bool:
        """The operator's own server image, or one on the allow-list: an exact reference, or a
        prefix ending in ``*`` (``registry.example.com/tinyimg/*``)."""
        if image == self.server_image:
            return True
        return any(image.startswith(p[:-1]) if p.endswith("*") else image == p for p in self.allowed_images)


def load_build_settings(environ: Mapping[str, str] | None = None) -> BuildSettings:
    """TINYIMG_SERVER_IMAGE (default model-server image), TINYIMG_IMAGE_PULL_POLICY (optional),
    TINYIMG_ALLOWED_IMAGES (comma-separated images or ``prefix*`` an ImageModel may also use),
    TINYIMG_AUTOSCALER (builtin, the default, or off: the chart's one autoscaling switch),
    TINYIMG_SERVER_SETTINGS (JSON: the server settings of every model pod), TINYIMG_WEBHOOK_SECRET
    (the name of the Secret holding the webhook signing key), TINYIMG_ROUTER_SECRET (the name of the
    Secret holding the router's job secret), TINYIMG_REDIS_SECRET (the Secret with the Redis
    password), TINYIMG_S3_SECRET (the Secret with S3 credentials), TINYIMG_RESULTS_CLAIM (a
    ReadWriteMany claim for the result directory), TINYIMG_C2PA_SECRET (a TLS Secret signing C2PA
    manifests); every OTEL_* variable but OTEL_SERVICE_NAME
    is passed on to model pods (``otel_env``)."""
    env = os.environ if environ is None else environ
    policy = env.get("TINYIMG_IMAGE_PULL_POLICY") or None
    if policy is not None and policy not in PULL_POLICIES:
        raise ValueError(f"TINYIMG_IMAGE_PULL_POLICY must be one of {', '.join(PULL_POLICIES)}, not {policy!r}")
    allowed = tuple(p.strip() for p in (env.get("TINYIMG_ALLOWED_IMAGES") or "").split(",") if p.strip())
    autoscaler = env.get("TINYIMG_AUTOSCALER") or "builtin"
    if autoscaler not in ("builtin", "off"):
        raise ValueError(f"TINYIMG_AUTOSCALER must be builtin or off, not {autoscaler!r}")
    raw = env.get("TINYIMG_SERVER_SETTINGS") or ""
    try:
        server = PodServerSettings.model_validate(json.loads(raw)) if raw.strip() else None
    except ValueError as err:  # JSON or validation: the message names the field
        raise ValueError(f"TINYIMG_SERVER_SETTINGS: {err}") from None
    return BuildSettings(
        server_image=env.get("TINYIMG_SERVER_IMAGE") or DEFAULT_SERVER_IMAGE,
        server=server,
        webhook_secret=env.get("TINYIMG_WEBHOOK_SECRET") or None,
        router_secret=env.get("TINYIMG_ROUTER_SECRET") or None,
        redis_secret=env.get("TINYIMG_REDIS_SECRET") or None,
        s3_secret=env.get("TINYIMG_S3_SECRET") or None,
        results_claim=env.get("TINYIMG_RESULTS_CLAIM") or None,
        c2pa_secret=env.get("TINYIMG_C2PA_SECRET") or None,
        secrets_namespace=env.get("TINYIMG_NAMESPACE") or None,
        image_pull_policy=policy,
        allowed_images=allowed,
        builtin_autoscaler=autoscaler == "builtin",
        otel_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith("OTEL_") and k != "OTEL_SERVICE_NAME")),
    )
