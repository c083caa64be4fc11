"""Kubernetes discovery: watch the ImageModels of one namespace, the operator's Deployments and
their ReplicaSets, and the pods labelled ``tinyimg.io/model``, and keep the backend table equal to
what they say.

A label proves nothing: anyone who may create a pod in the namespace can set it. A pod is a
backend of model M only when its owner chain ends at the ImageModel M that exists now:
pod -> ReplicaSet -> Deployment (or pod -> Deployment), each link the ``controller``
ownerReference naming the owner's uid, the Deployment labelled
``app.kubernetes.io/managed-by: tinyimg-operator`` and ``tinyimg.io/model: M``. Uids are checked
against the objects watched, so an ownerReference that names a made-up owner matches nothing.

Plain httpx against the API server (connection and errors shared with the operator: tinyimg.kube) (list, then watch from the list's resourceVersion; on any end or
error, list again after a short pause), on the app's event loop, no thread. Every event rebuilds
the desired table from the two object maps with pure functions, so a replayed or repeated event
changes nothing. Labels are also checked here: a selector the API server ignores does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from tinyimg.core import labels
from tinyimg.core.status import ImageModelStatus
from tinyimg.kube.connection import KubeConnection
from tinyimg.kube.errors import KubeApiError, raise_for_kube_status
from tinyimg.kube.objects import build_pod_url, controller_of, is_pod_ready
from tinyimg.router.discovery import Discovery
from tinyimg.router.table import BackendRef, BackendTable, ModelBackends
from tinyimg.spec import AutoscalingSpec

log = logging.getLogger("tinyimg.router.kube")

RELIST_PAUSE_SECONDS = 1.0
WATCH_TIMEOUT_SECONDS = 290  # the API server ends a watch by then; the loop lists again
DISCOVERY_GRACE_SECONDS = 10.0  # a Ready model's pod not yet seen here: requests wait this long


def build_watch_client(connection: KubeConnection) -> httpx.AsyncClient:
    return httpx.AsyncClient(**connection.client_options(), timeout=httpx.Timeout(10.0, read=WATCH_TIMEOUT_SECONDS + 30))


def build_model_status(imagemodel: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(family, state, reason) of an ImageModel: its Degraded condition means failed; else loading
    until the router itself sees a ready pod (then the table says ready)."""
    family = imagemodel.get("spec", {}).get("family")
    degraded = ImageModelStatus.read(imagemodel).condition("Degraded")
    if degraded is not None and degraded.status == "True":
        return family, "failed", degraded.message or degraded.reason
    return family, "loading", None


def _by_uid(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {uid: o for o in objects.values() if (uid := o.get("metadata", {}).get("uid"))}


def _owned(obj: dict[str, Any], kind: str, owners_by_uid: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The owner of ``obj`` of ``kind``, when its controller reference names one that exists."""
    ref = controller_of(obj)
    if ref is None or ref.get("kind") != kind:
        return None
    owner = owners_by_uid.get(ref.get("uid", ""))
    return owner if owner is not None and owner["metadata"].get("name") == ref.get("name") else None


def find_owning_model(
    pod: dict[str, Any],
    imagemodels: dict[str, dict[str, Any]],
    deployments: dict[str, dict[str, Any]],
    replicasets: dict[str, dict[str, Any]],
) -> str | None:
    """The ImageModel whose operator-made Deployment owns ``pod`` (directly or through a
    ReplicaSet), or None. The pod's model label must name the same model."""
    deployments_by_uid = _by_uid(deployments)
    replicaset = _owned(pod, "ReplicaSet", _by_uid(replicasets))
    deployment = _owned(replicaset, "Deployment", deployments_by_uid) if replicaset else _owned(pod, "Deployment", deployments_by_uid)
    if deployment is None:
        return None
    dep_labels = deployment["metadata"].get("labels") or {}
    model = dep_labels.get(labels.MODEL)
    if dep_labels.get(labels.MANAGED_BY) != labels.OPERATOR_NAME or model not in imagemodels:
        return None
    if (pod.get("metadata", {}).get("labels") or {}).get(labels.MODEL) != model:
        return None
    owner = _owned(deployment, labels.KIND, _by_uid({model: imagemodels[model]}))
    return model if owner is not None else None


# The cluster's autoscaler (the chart's autoscaling.controller) and whether it can wake a model at
# zero: builtin reads the router's demand annotation, KEDA the router's waiting-requests metric;
# an HPA never goes below one and with none nobody scales, so holding a request would only delay a 503.
AUTOSCALERS = ("builtin", "keda", "hpa", "none")
WAKES_FROM_ZERO = ("builtin", "keda")


def build_cold_start(imagemodel: dict[str, Any], autoscaler: str = "builtin") -> tuple[float | None, str | None, str | None]:
    """(cold-start timeout, state, reason) of an autoscaled ImageModel; (None, None, None) when
    autoscaling is off, or when the cluster's autoscaler cannot wake a model: then a model without a
    ready pod is refused at once (but see ``build_discovery_grace``)."""
    autoscaling = imagemodel.get("spec", {}).get("autoscaling") or {}
    if not autoscaling.get("enabled") or autoscaler not in WAKES_FROM_ZERO:
        return None, None, None
    timeout = float(autoscaling.get("coldStartTimeoutSeconds") or AutoscalingSpec().cold_start_timeout_seconds)
    status = ImageModelStatus.read(imagemodel)
    if status.autoscaling is not None and status.autoscaling.desired_replicas == 0:
        return timeout, "scaled-to-zero", "no replicas while idle; a request starts one"
    return timeout, "starting", "waiting for a ready pod"


def build_discovery_grace(imagemodel: dict[str, Any]) -> float | None:
    """How long a request waits for a pod of a model whose ImageModel says Ready while this router
    sees no ready pod of it yet; None when the ImageModel is not Ready.

    The operator marks an ImageModel Ready from its Deployment's status; this router learns of the
    pod from its own watches, which can lag behind (a busy API server, a watch being re-opened). A
    user who runs ``kubectl wait --for=condition=Ready`` and then sends a request should not get a
    503 for that gap, so the request waits (as in a cold start, without asking for a pod)."""
    return DISCOVERY_GRACE_SECONDS if ImageModelStatus.read(imagemodel).is_true("Ready") else None


def build_desired_table(
    imagemodels: dict[str, dict[str, Any]],
    pods: dict[str, dict[str, Any]],
    deployments: dict[str, dict[str, Any]],
    replicasets: dict[str, dict[str, Any]],
    autoscaler: str = "builtin",
) -> dict[str, ModelBackends]:
    """model -> its backends, from the ImageModels, the operator's Deployments, their ReplicaSets and
    the pods of the namespace. Pods not owned by an existing ImageModel's Deployment are left out."""
    backends: dict[str, list[BackendRef]] = {name: [] for name in imagemodels}
    for name in sorted(pods):
        pod = pods[name]
        model = find_owning_model(pod, imagemodels, deployments, replicasets)
        url = build_pod_url(pod)
        if model is not None and url:
            revision = (pod.get("metadata", {}).get("labels") or {}).get(labels.REVISION)
            backends[model].append(BackendRef(url=url, name=name, ready=is_pod_ready(pod), revision=revision))
    desired = {}
    for name, obj in imagemodels.items():
        family, state, reason = build_model_status(obj)
        cold_start, cold_state, cold_reason = build_cold_start(obj, autoscaler)
        if cold_state and state != "failed":
            state, reason = cold_state, cold_reason
        desired[name] = ModelBackends(family=family, state=state, reason=reason, backends=tuple(backends[name]),
                                      cold_start_timeout=cold_start or build_discovery_grace(obj),
                                      scales_from_zero=cold_start is not None,
                                      weights=tuple(sorted(ImageModelStatus.read(obj).revision_weights().items())))
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


def is_operator_managed(obj: dict[str, Any]) -> bool:
    return (obj.get("metadata", {}).get("labels") or {}).get(labels.MANAGED_BY) == labels.OPERATOR_NAME


class KubeDiscovery(Discovery):
    mode = "kubernetes"

    def __init__(self, connection: KubeConnection, reload: Callable[[], KubeConnection] | None = None,
                 autoscaler: str = "builtin"):
        """``reload``: read the credentials again (``load_kube_connection``), called when the API
        server answers 401: a kubeconfig's token may expire (an exec plugin's does) and be renewed."""
        self.connection, self.reload, self.autoscaler = connection, reload, autoscaler
        self._login_lock = asyncio.Lock()
        self._logged_in_at = 0.0
        self.imagemodels: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.replicasets: dict[str, dict[str, Any]] = {}
        self.listed: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self.client: httpx.AsyncClient | None = None
        self.table: BackendTable | None = None

    def _paths(self) -> dict[str, str]:
        ns = self.connection.namespace
        return {
            "imagemodels": f"/apis/{labels.GROUP}/{labels.VERSION}/namespaces/{ns}/{labels.PLURAL}",
            "pods": f"/api/v1/namespaces/{ns}/pods",
            "deployments": f"/apis/apps/v1/namespaces/{ns}/deployments",
            "replicasets": f"/apis/apps/v1/namespaces/{ns}/replicasets",
        }

    async def start(self, table: BackendTable) -> None:
        """Starts the watches and returns at once: /health/ready says 503 until both are listed."""
        self.table, self.client = table, build_watch_client(self.connection)
        paths = self._paths()
        managed = {"labelSelector": f"{labels.MANAGED_BY}={labels.OPERATOR_NAME}"}
        model_label = {"labelSelector": labels.MODEL}
        self.tasks = [
            asyncio.create_task(self._watch("imagemodels", paths["imagemodels"], {}, self.imagemodels, lambda o: True)),
            asyncio.create_task(self._watch("pods", paths["pods"], model_label, self.pods, has_model_label)),
            asyncio.create_task(
                self._watch("deployments", paths["deployments"], managed, self.deployments, is_operator_managed)
            ),
            asyncio.create_task(
                self._watch("replicasets", paths["replicasets"], model_label, self.replicasets, has_model_label)
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

    async def record_demand(self, model: str) -> None:
        """Ask for a pod of ``model``: a new value of its demand annotation, which the operator's
        autoscaler counts as load. A merge patch of one annotation: the router's only write, one
        verb (patch on imagemodels) beyond its discovery reads; patching the scale subresource
        instead would need a rule of its own and would fight spec.replicas, which is the user's."""
        assert self.client is not None
        if self.autoscaler != "builtin":  # KEDA reads tinyimg_router_waiting_requests instead
            return
        path = f"{self._paths()['imagemodels']}/{model}"
        token = f"{time.time():.3f}"
        body = {"metadata": {"annotations": {labels.DEMAND_ANNOTATION: token}}}
        for attempt in range(2):  # once more with fresh credentials after a 401
            response = await self.client.patch(path, content=json.dumps(body),
                                               headers={"Content-Type": "application/merge-patch+json"})
            if response.status_code != 401 or attempt or self.reload is None:
                break
            await self._login_again(force=True)
        raise_for_kube_status(response)

    def _refresh(self) -> None:
        assert self.table is not None
        self.table.sync(build_desired_table(self.imagemodels, self.pods, self.deployments, self.replicasets,
                                            self.autoscaler))
        if self.listed == {"imagemodels", "pods", "deployments", "replicasets"}:
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
                raise_for_kube_status(listing)
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
                    if stream.status_code >= 400:
                        await stream.aread()
                        raise_for_kube_status(stream)
                    async for line in stream.aiter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            break  # e.g. 410 Gone: the list below starts over
                        obj = event.get("object") or {}
                        kind_of_event = event.get("type", "")
                        if not wanted(obj) and kind_of_event == "MODIFIED":
                            kind_of_event = "DELETED"  # it lost what made it ours (a label)
                        if wanted(obj) or kind_of_event == "DELETED":
                            apply_event(objects, kind_of_event, obj)
                            self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # API down, bad JSON, 403: log, pause, list again
                log.warning("watching %s failed: %s", kind, err or type(err).__name__)
                if isinstance(err, KubeApiError) and err.status == 401:
                    await self._login_again()
            await asyncio.sleep(RELIST_PAUSE_SECONDS)

    async def _login_again(self, force: bool = False) -> None:
        """New credentials and a new client, once for all the watches that met the same 401
        (``force``: even if another caller just did)."""
        if self.reload is None:
            return
        async with self._login_lock:
            if not force and time.monotonic() - self._logged_in_at < RELIST_PAUSE_SECONDS:
                return  # another watch just did
            try:
                connection = self.reload()
            except Exception as err:  # KubeConfigError and what the kubeconfig loader raises
                log.warning("reading the credentials again failed: %s", err)
                return
            old, self.connection = self.client, connection
            self.client, self._logged_in_at = build_watch_client(connection), time.monotonic()
            log.info("logged in again after a 401")
            if old is not None:
                await old.aclose()
