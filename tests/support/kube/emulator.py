"""The emulated Kubernetes API server: an in-memory object store behind the real REST protocol.

It started as kmock's emulator plus fixes; kubectl and helm need more of the protocol than kmock's
request model can express (``/api/v1/namespaces/NAME`` is parsed as a namespace, PUT has no
action, lists carry no kind), so it is now a small aiohttp server of its own. What it does, as an
API server does it:

- discovery (``/api``, ``/apis``, group and resource lists, ``/version``); creating a CRD makes
  its resource discoverable, deleting it removes the resource and its objects;
- get, list (``{Kind}List`` with ``kind``/``apiVersion`` on every item; a ``Table`` when asked),
  watch (from a ``resourceVersion``: only newer events; without one: the current objects as ADDED,
  then events; ``timeoutSeconds``), create (``generateName``, 409 on duplicates), update (PUT,
  409 on a stale ``resourceVersion``), patch (JSON, merge and strategic merge, see ``patches``;
  server-side apply is taken as a merge patch that may create), delete and deletecollection;
- label and field selectors (``selectors``) on lists, watches and deletecollection;
- ``uid``/``creationTimestamp``/``resourceVersion``/``generation`` kept as the API server keeps
  them; a write that changes nothing is not a write (no new version, no event);
- the ``status`` subresource: writes to the main resource leave ``status`` alone and writes to
  ``/status`` change only ``status`` (objects may be *created* with a status, which the real
  server drops: tests build ready pods in one call); the ``scale`` subresource reads and writes
  ``autoscaling/v1`` Scale objects (Deployments, and CRDs by their ``specReplicasPath``);
- custom resources are defaulted, pruned and validated against their CRD's schema (``crd``): a
  bad object is refused with 422, and ``fieldValidation=Strict`` refuses unknown fields;
- finalizers hold a deleted object (``deletionTimestamp``) until they are removed; a Pod bound to
  a node (``spec.nodeName``) is deleted gracefully: it stays, marked, until its kubelet deletes it
  with ``gracePeriodSeconds=0``; the garbage collector deletes objects whose owners are all gone
  (``propagationPolicy: Orphan`` keeps them);
- every request is recorded with its RBAC verb, resource, namespace and the user its bearer token
  names (:meth:`KubeEmulator.issue_token`), for least-privilege checks. Nothing is refused for
  lack of permission: the test compares what was done with what the chart grants.

OpenAPI: ``/openapi/v3`` documents list each object path's PATCH operation with its kind and the
``fieldValidation`` parameter and carry no schemas: kubectl and helm then leave validation to
the server (above) instead of validating client-side (``/openapi/v2``, protobuf, is a 404).
Protobuf request bodies are decoded for the kinds client-go's typed clients send (``protobuf``);
answers are always JSON. Not emulated: admission webhooks, namespaces being required to exist,
field managers, aggregated discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import yaml

from tests.support.kube import discovery, protobuf
from tests.support.kube.crd import InvalidError, ResourceInfo, admit, jsonpath, resource_from_crd
from tests.support.kube.patches import PatchError, apply_patch, merge_patch
from tests.support.kube.selectors import SelectorError, match_field_selector, match_label_selector

# (resource, kind, namespaced, subresources)
DEFAULT_RESOURCES: tuple[tuple[str, str, bool, tuple[str, ...]], ...] = (
    ("v1/namespaces", "Namespace", False, ("status",)),
    ("v1/pods", "Pod", True, ("status",)),
    ("v1/services", "Service", True, ("status",)),
    ("v1/configmaps", "ConfigMap", True, ()),
    ("v1/secrets", "Secret", True, ()),
    ("v1/serviceaccounts", "ServiceAccount", True, ()),
    ("v1/events", "Event", True, ()),
    ("v1/persistentvolumeclaims", "PersistentVolumeClaim", True, ("status",)),
    ("apps/v1/deployments", "Deployment", True, ("status", "scale")),
    ("apps/v1/replicasets", "ReplicaSet", True, ("status", "scale")),
    ("apps/v1/statefulsets", "StatefulSet", True, ("status", "scale")),
    ("batch/v1/jobs", "Job", True, ("status",)),
    ("policy/v1/poddisruptionbudgets", "PodDisruptionBudget", True, ("status",)),
    ("networking.k8s.io/v1/ingresses", "Ingress", True, ("status",)),
    ("networking.k8s.io/v1/networkpolicies", "NetworkPolicy", True, ()),
    ("discovery.k8s.io/v1/endpointslices", "EndpointSlice", True, ()),
    ("rbac.authorization.k8s.io/v1/roles", "Role", True, ()),
    ("rbac.authorization.k8s.io/v1/rolebindings", "RoleBinding", True, ()),
    ("rbac.authorization.k8s.io/v1/clusterroles", "ClusterRole", False, ()),
    ("rbac.authorization.k8s.io/v1/clusterrolebindings", "ClusterRoleBinding", False, ()),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, ("status",)),
    ("monitoring.coreos.com/v1/servicemonitors", "ServiceMonitor", True, ()),
    ("monitoring.coreos.com/v1/podmonitors", "PodMonitor", True, ()),
    ("monitoring.coreos.com/v1/prometheusrules", "PrometheusRule", True, ()),
    ("tinyimg.io/v1alpha1/imagemodels", "ImageModel", True, ("status", "scale")),
)
SHORT_NAMES = {"imagemodels": ("imgm",), "deployments": ("deploy",), "pods": ("po",), "services": ("svc",),
               "configmaps": ("cm",), "namespaces": ("ns",), "serviceaccounts": ("sa",), "replicasets": ("rs",), "statefulsets": ("sts",),
               "customresourcedefinitions": ("crd", "crds"), "endpointslices": (), "events": ("ev",)}
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
DEPLOYMENT_SCALE = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
WATCH_END = object()


@dataclass(frozen=True)
class Served:
    """One request as an authorizer sees it (RBAC's verb, resource, namespace, user)."""

    method: str
    path: str
    verb: str | None  # get/list/watch/create/update/patch/delete/deletecollection; None: not a resource
    group: str | None
    resource: str | None  # plural, e.g. "pods"
    subresource: str | None
    namespace: str | None
    name: str | None
    user: str | None  # e.g. "system:serviceaccount:ns:sa"; None without a known token
    user_agent: str


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, causes: list[tuple[str, str]] = ()):
        super().__init__(message)
        self.code, self.reason, self.message, self.causes = code, reason, message, list(causes)

    def status(self) -> dict[str, Any]:
        details = {"causes": [{"field": f, "message": m, "reason": "FieldValueInvalid"} for f, m in self.causes]}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code, "details": details}


def split_resource(resource: str) -> tuple[str, str, str]:
    """``"v1/pods"`` → ``("", "v1", "pods")``; ``"apps/v1/deployments"`` → ``("apps", "v1", "deployments")``."""
    parts = resource.split("/")
    return ("", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])


def api_path(resource: str, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
    """The REST path of a resource, object or subresource."""
    group, version, plural = split_resource(resource)
    base = f"/api/{version}" if group == "" else f"/apis/{group}/{version}"
    parts = [base] + ([f"namespaces/{namespace}"] if namespace else []) + [plural]
    parts += [name] if name else []
    parts += [subresource] if subresource else []
    return "/".join(parts)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rv(obj: Mapping[str, Any]) -> int:
    return int(obj.get("metadata", {}).get("resourceVersion") or 0)


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.strip(".").split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[last] = value


@dataclass
class _Target:
    """A parsed resource URL."""

    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class _Watcher:
    info: ResourceInfo
    namespace: str | None
    labels: str | None
    fields: str | None
    queue: asyncio.Queue[Any]


class KubeEmulator:
    """The API server. Start it with :func:`running_emulator`; ``url`` is where it listens."""

    def __init__(self) -> None:
        self.url = ""
        self._resources: dict[str, ResourceInfo] = {}
        self._objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self._events: list[tuple[int, str, dict[str, Any]]] = []  # (rv, resource key, event)
        self._watchers: list[_Watcher] = []
        self._versions = itertools.count(1)
        self._current_rv = 0
        self._served: list[Served] = []
        self._tokens: dict[str, str] = {}
        self._revoked: set[str] = set()

    # -- the public surface ----------------------------------------------------------------------
    def declare(self, resource: str, kind: str, namespaced: bool = True, subresources: Iterable[str] = ()) -> None:
        """Make a resource discoverable and usable (a built-in kind, or a CRD without its object)."""
        group, version, plural = split_resource(resource)
        self._resources[resource] = ResourceInfo(
            group=group, version=version, plural=plural, kind=kind, namespaced=namespaced,
            subresources=tuple(subresources), short_names=SHORT_NAMES.get(plural, ()),
            scale=DEPLOYMENT_SCALE if "scale" in subresources else None,
        )

    def is_namespaced(self, resource: str) -> bool:
        return self._resources[resource].namespaced

    def resource_of(self, api_version: str, kind: str) -> str:
        """``("apps/v1", "Deployment")`` → ``"apps/v1/deployments"``; KeyError when not served."""
        for key, info in self._resources.items():
            if info.api_version == api_version and info.kind == kind:
                return key
        raise KeyError(f"undeclared resource for {api_version} {kind}")

    def read(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (a copy), or None."""
        obj = self._objects.get((resource, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def read_all(
        self, resource: str, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The stored objects of a resource (copies), optionally in one namespace with these labels."""
        return [
            copy.deepcopy(obj) for (res, ns, _), obj in self._objects.items()
            if res == resource and (namespace is None or ns == namespace)
            and all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in (labels or {}).items())
        ]

    def served(self) -> list[Served]:
        """Every request served so far, in order."""
        return list(self._served)

    def revoke_token(self, token: str) -> None:
        """From now on a request with ``token`` is answered 401, as an expired token is."""
        self._revoked.add(token)

    def issue_token(self, user: str) -> str:
        """A bearer token whose requests are recorded as ``user`` (e.g. ``system:serviceaccount:ns:sa``)."""
        token = f"emulated-{secrets.token_hex(8)}"
        self._tokens[token] = user
        return token

    def end_watches(self) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(WATCH_END)

    # -- HTTP ------------------------------------------------------------------------------------
    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        parts = [p for p in request.path.strip("/").split("/") if p]
        target: _Target | None = None
        try:
            target = self._target(parts)
            self._served.append(self._record(request, target))
            if request.headers.get("Authorization", "").removeprefix("Bearer ") in self._revoked:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if target is None:
                return aiohttp.web.json_response(self._non_resource(parts, request))
            match_label_selector({}, request.query.get("labelSelector"))  # refused up front, as the server does
            match_field_selector({}, request.query.get("fieldSelector"))
            return await self._resource_request(request, target)
        except ApiError as exc:
            return aiohttp.web.json_response(exc.status(), status=exc.code)
        except (SelectorError, json.JSONDecodeError, yaml.YAMLError) as exc:
            return aiohttp.web.json_response(ApiError(400, "BadRequest", str(exc)).status(), status=400)
        except PatchError as exc:
            return aiohttp.web.json_response(ApiError(422, "Invalid", str(exc)).status(), status=422)
        except InvalidError as exc:
            kind = target.info.kind if target else "object"
            err = ApiError(422, "Invalid", f"{kind} is invalid: {exc}", exc.causes)
            return aiohttp.web.json_response(err.status(), status=422)

    def _record(self, request: aiohttp.web.Request, target: _Target | None) -> Served:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        verb = None
        if target is not None:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(request.method)
            if request.method == "GET":
                watching = request.query.get("watch") in ("true", "1")
                verb = "watch" if watching else ("get" if target.name else "list")
            elif request.method == "DELETE":
                verb = "delete" if target.name else "deletecollection"
        return Served(
            method=request.method, path=request.path, verb=verb,
            group=target.info.group if target else None, resource=target.info.plural if target else None,
            subresource=target.subresource if target else None, namespace=target.namespace if target else None,
            name=target.name if target else None, user=self._tokens.get(token),
            user_agent=request.headers.get("User-Agent", ""),
        )

    def _target(self, parts: list[str]) -> _Target | None:
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None
        gv = version if group == "" else f"{group}/{version}"
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and f"{gv}/{rest[2]}" in self._resources:
            namespace, rest = rest[1], rest[2:]
        info = self._resources.get(f"{gv}/{rest[0]}")
        if info is None or len(rest) > 3:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({'/'.join(parts)})")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and subresource not in info.subresources:
            raise ApiError(404, "NotFound", f"{info.plural} has no subresource {subresource!r}")
        return _Target(info, namespace, name, subresource)

    def _non_resource(self, parts: list[str], request: aiohttp.web.Request) -> dict[str, Any]:
        served = list(self._resources.values())
        doc: dict[str, Any] | None = None
        if parts == ["version"]:
            doc = discovery.SERVER_VERSION
        elif parts == ["api"]:
            doc = discovery.api_versions(request.host)
        elif parts == ["apis"]:
            doc = discovery.api_group_list(served)
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(served, parts[1])
        elif len(parts) == 2 and parts[0] == "api":
            doc = discovery.api_resource_list(served, "", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.api_resource_list(served, parts[1], parts[2])
        elif parts == ["openapi", "v3"]:
            doc = discovery.openapi_v3_index(served)
        elif parts[:3] == ["openapi", "v3", "api"] and len(parts) == 4:
            doc = discovery.openapi_v3_group_version(served, "", parts[3])
        elif parts[:3] == ["openapi", "v3", "apis"] and len(parts) == 5:
            doc = discovery.openapi_v3_group_version(served, parts[3], parts[4])
        elif parts in ([], ["healthz"], ["readyz"], ["livez"]):
            doc = {"paths": ["/api", "/apis", "/version"]} if not parts else {"status": "ok"}
        if doc is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        return doc

    async def _resource_request(self, request: aiohttp.web.Request, t: _Target) -> aiohttp.web.StreamResponse:
        method, query = request.method, request.query
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._watch(request, t)
        if method == "GET" and t.name is None:
            items = self._select(t.info, t.namespace, query.get("labelSelector"), query.get("fieldSelector"))
            if "as=Table" in request.headers.get("Accept", ""):
                return aiohttp.web.json_response(discovery.table(t.info, items, str(self._current_rv)))
            return aiohttp.web.json_response({
                "apiVersion": t.info.api_version, "kind": f"{t.info.kind}List",
                "metadata": {"resourceVersion": str(self._current_rv)}, "items": items,
            })
        body = await self._body(request)
        if method == "POST" and t.name is None:
            return aiohttp.web.json_response(self._create(t, body, query), status=201)
        if method == "DELETE" and t.name is None:
            items = self._select(t.info, t.namespace, query.get("labelSelector"), query.get("fieldSelector"))
            for obj in items:
                self._delete(t.info, t.namespace, obj["metadata"]["name"], body or {})
            return aiohttp.web.json_response({
                "apiVersion": t.info.api_version, "kind": f"{t.info.kind}List",
                "metadata": {"resourceVersion": str(self._current_rv)}, "items": items,
            })
        if t.name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} needs an object name")
        if method == "GET":
            obj = self._existing(t)
            if "as=Table" in request.headers.get("Accept", "") and t.subresource is None:
                return aiohttp.web.json_response(discovery.table(t.info, [obj], str(self._current_rv)))
            return aiohttp.web.json_response(self._scale_of(t.info, obj) if t.subresource == "scale" else obj)
        if method == "DELETE":
            return aiohttp.web.json_response(self._delete(t.info, t.namespace, t.name, body or {}))
        if method == "PUT":
            return aiohttp.web.json_response(self._update(t, body, query, replace=True))
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "application/merge-patch+json")
            if "apply-patch" in ctype and (t.info.key, t.namespace, t.name) not in self._objects:
                return aiohttp.web.json_response(self._create(t, body, query), status=201)
            return aiohttp.web.json_response(self._update(t, body, query, content_type=ctype))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    @staticmethod
    async def _body(request: aiohttp.web.Request) -> Any:
        if "protobuf" in request.headers.get("Content-Type", ""):
            try:
                return protobuf.decode(await request.read())
            except protobuf.UnsupportedProtobuf as exc:
                raise ApiError(415, "UnsupportedMediaType", str(exc)) from None
        text = await request.text()
        if not text:
            return None
        if "yaml" in request.headers.get("Content-Type", ""):
            return yaml.safe_load(text)
        return json.loads(text)

    # -- the store -------------------------------------------------------------------------------
    def _select(self, info: ResourceInfo, namespace: str | None, labels: str | None, fields: str | None) -> list[dict[str, Any]]:
        found = [
            copy.deepcopy(obj) for (res, ns, _), obj in self._objects.items()
            if res == info.key and (namespace is None or ns == namespace)
            and match_label_selector(obj["metadata"].get("labels") or {}, labels)
            and match_field_selector(obj, fields)
        ]
        return sorted(found, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def _existing(self, t: _Target) -> dict[str, Any]:
        obj = self._objects.get((t.info.key, t.namespace, t.name or ""))
        if obj is None:
            raise ApiError(404, "NotFound", f'{t.info.plural}.{t.info.group or "core"} "{t.name}" not found')
        return copy.deepcopy(obj)

    def _next_rv(self) -> str:
        self._current_rv = next(self._versions)
        return str(self._current_rv)

    def _emit(self, info: ResourceInfo, kind: str, obj: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self._events.append((_rv(obj), info.key, event))
        for watcher in self._watchers:
            if watcher.info.key == info.key and self._watched(watcher, obj):
                watcher.queue.put_nowait(event)

    @staticmethod
    def _watched(watcher: _Watcher, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return ((watcher.namespace is None or meta.get("namespace") == watcher.namespace)
                and match_label_selector(meta.get("labels") or {}, watcher.labels)
                and match_field_selector(obj, watcher.fields))

    def _admit(self, info: ResourceInfo, obj: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
        return admit(obj, info.schema, strict=query.get("fieldValidation") == "Strict")

    def _create(self, t: _Target, body: Any, query: Mapping[str, str]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value", [("metadata.name", "Required value")])
        if t.info.namespaced:
            if meta.get("namespace") and t.namespace and meta["namespace"] != t.namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the namespace of the URL")
            meta["namespace"] = t.namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        key = (t.info.key, meta.get("namespace"), meta["name"])
        if key in self._objects:
            raise ApiError(409, "AlreadyExists", f'{t.info.plural} "{meta["name"]}" already exists')
        obj.update(apiVersion=t.info.api_version, kind=t.info.kind)
        obj = self._admit(t.info, obj, query)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, resourceVersion=self._next_rv())
        if t.info.key == CRDS:  # what the apiextensions controller reports once the names are served
            obj["status"] = {"acceptedNames": obj.get("spec", {}).get("names", {}), "conditions": [
                {"type": t, "status": "True", "reason": r, "lastTransitionTime": _now(), "message": ""}
                for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
            ]}
        if query.get("dryRun"):
            return obj
        self._objects[key] = obj
        if t.info.key == CRDS:
            for info in resource_from_crd(obj):
                self._resources[info.key] = info
        self._emit(t.info, "ADDED", obj)
        return copy.deepcopy(obj)

    def _update(
        self, t: _Target, body: Any, query: Mapping[str, str], replace: bool = False, content_type: str = ""
    ) -> dict[str, Any]:
        old = self._existing(t)
        if t.subresource == "scale":
            scale = self._scale_of(t.info, old)
            scale = body if replace else apply_patch(scale, body, content_type)
            new = copy.deepcopy(old)
            _set_path(new, t.info.scale["specReplicasPath"], (scale.get("spec") or {}).get("replicas"))
            return self._scale_of(t.info, self._commit(t.info, old, new, None, query))
        if replace:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body must be an object")
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again")
            new = copy.deepcopy(body)
        elif "apply-patch" in content_type:
            new = merge_patch(old, body)
        else:
            new = apply_patch(old, body, content_type)
        return self._commit(t.info, old, new, t.subresource, query)

    def _commit(
        self, info: ResourceInfo, old: dict[str, Any], new: dict[str, Any], sub: str | None, query: Mapping[str, str]
    ) -> dict[str, Any]:
        if sub == "status":
            new = {**old, "status": new.get("status")}
        elif "status" in info.subresources:
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                new["status"] = old["status"]
        new.update(apiVersion=info.api_version, kind=info.kind)
        meta = new.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp", "name", "namespace", "generation", "resourceVersion", "deletionTimestamp"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        if sub is None:
            new = self._admit(info, new, query)
        if new == old:
            return old
        if sub is None and any(new.get(k) != old.get(k) for k in (set(new) | set(old)) - {"metadata", "status"}):
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        if query.get("dryRun"):
            return new
        key = (info.key, new["metadata"].get("namespace"), new["metadata"]["name"])
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            removed = self._remove(info, key, new)
            self._collect_garbage()
            return removed
        self._objects[key] = new
        if info.key == CRDS:
            for served in resource_from_crd(new):
                self._resources[served.key] = served
        self._emit(info, "MODIFIED", new)
        return copy.deepcopy(new)

    def _delete(self, info: ResourceInfo, namespace: str | None, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        key = (info.key, namespace, name)
        obj = self._objects.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{info.plural} "{name}" not found')
        meta = obj["metadata"]
        grace = options.get("gracePeriodSeconds")
        graceful = info.key == "v1/pods" and (obj.get("spec") or {}).get("nodeName") and grace != 0
        if meta.get("finalizers") or graceful:
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(obj)
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = _now()
            if graceful:
                default = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                marked["metadata"]["deletionGracePeriodSeconds"] = default if grace is None else grace
            marked["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = marked
            self._emit(info, "MODIFIED", marked)
            return copy.deepcopy(marked)
        removed = copy.deepcopy(obj)
        removed["metadata"]["resourceVersion"] = self._next_rv()
        result = self._remove(info, key, removed)
        if options.get("propagationPolicy") != "Orphan":
            self._collect_garbage()
        return result

    def _remove(self, info: ResourceInfo, key: tuple[str, str | None, str], last: dict[str, Any]) -> dict[str, Any]:
        self._objects.pop(key, None)
        self._emit(info, "DELETED", last)
        if info.key == CRDS:
            for served in resource_from_crd(last):
                for obj in self._select(served, None, None, None):
                    self._delete(served, obj["metadata"].get("namespace"), obj["metadata"]["name"], {})
                self._resources.pop(served.key, None)
        return copy.deepcopy(last)

    def _collect_garbage(self) -> None:
        """Delete (background cascade) every object whose owners are all gone."""
        while True:
            live = {obj["metadata"].get("uid") for obj in self._objects.values()}
            orphans = [
                (res, ns, name) for (res, ns, name), obj in self._objects.items()
                if (owners := obj["metadata"].get("ownerReferences"))
                and not any(o.get("uid") in live for o in owners)
                and not obj["metadata"].get("deletionTimestamp")
            ]
            if not orphans:
                return
            for res, ns, name in orphans:
                self._delete(self._resources[res], ns, name, {"propagationPolicy": "Orphan"})

    def _scale_of(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        paths = info.scale or DEPLOYMENT_SCALE
        selector = jsonpath(obj, paths["labelSelectorPath"]) if paths.get("labelSelectorPath") else None
        if selector is None and info.key in ("apps/v1/deployments", "apps/v1/statefulsets"):
            labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        meta = obj["metadata"]
        return {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
            "spec": {"replicas": jsonpath(obj, paths["specReplicasPath"]) or 0},
            "status": {"replicas": jsonpath(obj, paths["statusReplicasPath"]) or 0,
                       **({"selector": selector} if selector else {})},
        }

    # -- watch -----------------------------------------------------------------------------------
    async def _watch(self, request: aiohttp.web.Request, t: _Target) -> aiohttp.web.StreamResponse:
        query = request.query
        fields = query.get("fieldSelector")
        if t.name:
            fields = ",".join(filter(None, [fields, f"metadata.name={t.name}"]))
        watcher = _Watcher(t.info, t.namespace, query.get("labelSelector"), fields, asyncio.Queue())
        since = query.get("resourceVersion")
        if since in (None, "", "0"):
            backlog = [{"type": "ADDED", "object": obj} for obj in self._select(t.info, t.namespace, watcher.labels, fields)]
        else:
            backlog = [copy.deepcopy(e) for rv, res, e in self._events
                       if res == t.info.key and rv > int(since) and self._watched(watcher, e["object"])]
        self._watchers.append(watcher)  # no await since the backlog was taken: no event is lost
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        timeout = float(query.get("timeoutSeconds") or 1800)
        try:
            await response.prepare(request)
            for event in backlog:
                await response.write(json.dumps(event).encode() + b"\n")
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if event is WATCH_END:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self._watchers.remove(watcher)
        return response


@contextlib.asynccontextmanager
async def running_emulator() -> AsyncIterator[KubeEmulator]:
    """A fresh emulated API server on a loopback port (``.url``), the default resources declared."""
    emulator = KubeEmulator()
    for resource, kind, namespaced, subresources in DEFAULT_RESOURCES:
        emulator.declare(resource, kind, namespaced, subresources)
    app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", emulator.handle)
    runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    emulator.url = f"http://127.0.0.1:{port}"
    try:
        yield emulator
    finally:
        emulator.end_watches()
        with contextlib.suppress(TimeoutError):  # a client that never reads must not hold the test up
            await asyncio.wait_for(runner.cleanup(), 5)
