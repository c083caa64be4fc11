"""Kubernetes discovery: watch the ImageModels of one namespace and the pods labelled
``tinyimg.io/model``, and keep the backend table equal to what they say.

Plain httpx against the API server (list, then watch from the list's resourceVersion; on any end or
error, list again after a short pause), on the app's event loop, no thread. Every event rebuilds
the desired table from the two object maps with pure functions, so a replayed or repeated event
changes nothing. Labels are also checked here: a selector the API server ignores does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tinyimg import labels
from tinyimg.router.table import BackendRef, BackendTable, ModelBackends

log = logging.getLogger("tinyimg.router.kube")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RELIST_PAUSE_SECONDS = 1.0
WATCH_TIMEOUT_SECONDS = 290  # the API server ends a watch by then; the loop lists again


class KubeConfigError(ValueError):
    pass


class TokenFileAuth(httpx.Auth):
    """Reads the service-account token on every request: Kubernetes rotates it in place."""

    def __init__(self, path: Path):
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.path.read_text().strip()}"
        yield request


@dataclass
class KubeConnection:
    base_url: str
    namespace: str
    auth: httpx.Auth | None = None
    headers: dict[str, str] = field(default_factory=dict)
    verify: Any = True  # True, False or a CA bundle path
    cert: tuple[str, str] | None = None

    def build_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            auth=self.auth,
            headers=self.headers,
            verify=self.verify,
            cert=self.cert,
            timeout=httpx.Timeout(10.0, read=WATCH_TIMEOUT_SECONDS + 30),
        )


def load_kube_connection(namespace: str | None = None) -> KubeConnection:
    """In-cluster service account when there is one, else the current kubeconfig context."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if host and (SERVICE_ACCOUNT_DIR / "token").exists():
        own = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip()
        return KubeConnection(
            base_url=f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}",
            namespace=namespace or own,
            auth=TokenFileAuth(SERVICE_ACCOUNT_DIR / "token"),
            verify=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        )
    try:
        from kubernetes import client, config

        configuration = client.Configuration()
        # The client reads $KUBECONFIG once, at import; read it now so the current value counts.
        path = os.environ.get("KUBECONFIG")
        config.load_kube_config(config_file=path, client_configuration=configuration)
        _, active = config.list_kube_config_contexts(config_file=path)
    except Exception as err:  # the kubernetes client raises several unrelated types here
        raise KubeConfigError(f"no in-cluster service account and no usable kubeconfig: {err}") from None
    token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    return KubeConnection(
        base_url=configuration.host,
        namespace=namespace or active.get("context", {}).get("namespace") or "default",
        headers={"Authorization": token} if token else {},
        verify=configuration.ssl_ca_cert or configuration.verify_ssl,
        cert=(configuration.cert_file, configuration.key_file) if configuration.cert_file else None,
    )


def is_pod_ready(pod: dict[str, Any]) -> bool:
    """Ready condition true, not terminating, has an IP."""
    if pod.get("metadata", {}).get("deletionTimestamp") or not pod.get("status", {}).get("podIP"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def build_pod_url(pod: dict[str, Any]) -> str | None:
    """http://<podIP>:<port>: the container port named "http", else the first one, else 8000."""
    ip = pod.get("status", {}).get("podIP")
    if not ip:
        return None
    ports = [p for c in pod.get("spec", {}).get("containers", []) for p in c.get("ports") or []]
    named = [p for p in ports if p.get("name") == "http"]
    port = (named or ports or [{"containerPort": labels.DEFAULT_PORT}])[0].get("containerPort", labels.DEFAULT_PORT)
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def build_model_status(imagemodel: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(family, state, reason) of an ImageModel: its Degraded condition means failed; else loading
    until the router itself sees a ready pod (then the table says ready)."""
    family = imagemodel.get("spec", {}).get("family")
    conditions = {c.get("type"): c for c in imagemodel.get("status", {}).get("conditions") or []}
    degraded = conditions.get("Degraded", {})
    if degraded.get("status") == "True":
        return family, "failed", degraded.get("message") or degraded.get("reason")
    return family, "loading", None


def build_desired_table(imagemodels: dict[str, dict[str, Any]], pods: dict[str, dict[str, Any]]) -> dict[str, ModelBackends]:
    """model -> its backends, from the ImageModels and pods of the namespace. Pods of a model with no
    ImageModel are left out: the model is not known (and its pods are going away)."""
    backends: dict[str, list[BackendRef]] = {name: [] for name in imagemodels}
    for name in sorted(pods):
        pod = pods[name]
        model = pod.get("metadata", {}).get("labels", {}).get(labels.MODEL)
        url = build_pod_url(pod)
        if model in backends and url:
            backends[model].append(BackendRef(url=url, name=name, ready=is_pod_ready(pod)))
    desired = {}
    for name, obj in imagemodels.items():
        family, state, reason = build_model_status(obj)
        desired[name] = ModelBackends(family=family, state=state, reason=reason, backends=tuple(backends[name]))
    return desired


def apply_event(objects: dict[str, dict[str, Any]], kind: str, obj: dict[str, Any]) -> None:
    name = obj.get("metadata", {}).get("name")
    if not name:
        return
    if kind == "DELETED":
        objects.pop(name, None)
    elif kind in ("ADDED", "MODIFIED"):
        objects[name] = obj


def has_model_label(obj: dict[str, Any]) -> bool:
    return labels.MODEL in (obj.get("metadata", {}).get("labels") or {})


class KubeDiscovery:
    mode = "kubernetes"

    def __init__(self, connection: KubeConnection):
        self.connection = connection
        self.imagemodels: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.listed: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self.client: httpx.AsyncClient | None = None
        self.table: BackendTable | None = None

    def _paths(self) -> dict[str, str]:
        ns = self.connection.namespace
        return {
            "imagemodels": f"/apis/{labels.GROUP}/{labels.VERSION}/namespaces/{ns}/{labels.PLURAL}",
            "pods": f"/api/v1/namespaces/{ns}/pods",
        }

    async def start(self, table: BackendTable) -> None:
        """Starts the watches and returns at once: /health/ready says 503 until both are listed."""
        self.table, self.client = table, self.connection.build_client()
        paths = self._paths()
        self.tasks = [
            asyncio.create_task(self._watch("imagemodels", paths["imagemodels"], {}, self.imagemodels, lambda o: True)),
            asyncio.create_task(
                self._watch("pods", paths["pods"], {"labelSelector": labels.MODEL}, self.pods, has_model_label)
            ),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.client is not None:
            await self.client.aclose()

    def _refresh(self) -> None:
        assert self.table is not None
        self.table.sync(build_desired_table(self.imagemodels, self.pods))
        if self.listed == {"imagemodels", "pods"}:
            self.table.synced = True

    async def _watch(
        self,
        kind: str,
        path: str,
        params: dict[str, str],
        objects: dict[str, dict[str, Any]],
        wanted: Callable[[dict[str, Any]], bool],
    ) -> None:
        assert self.client is not None
        while True:
            try:
                listing = await self.client.get(path, params=params)
                listing.raise_for_status()
                body = listing.json()
                objects.clear()
                objects.update({o["metadata"]["name"]: o for o in body.get("items", []) if wanted(o)})
                self.listed.add(kind)
                self._refresh()
                watch_params = {**params, "watch": "true", "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS)}
                version = body.get("metadata", {}).get("resourceVersion")
                if version:
                    watch_params["resourceVersion"] = version
                async with self.client.stream("GET", path, params=watch_params) as stream:
                    stream.raise_for_status()
                    async for line in stream.aiter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            break  # e.g. 410 Gone: the list below starts over
                        obj = event.get("object") or {}
                        if wanted(obj) or event.get("type") == "DELETED":
                            apply_event(objects, event.get("type", ""), obj)
                            self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # API down, bad JSON, 403: log, pause, list again
                log.warning("watching %s failed: %s", kind, err or type(err).__name__)
            await asyncio.sleep(RELIST_PAUSE_SECONDS)
