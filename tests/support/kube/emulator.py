"""The emulated Kubernetes API server: kmock's in-memory emulator with the gaps that matter filled.

This is the only module that touches kmock (and its private ``_internal`` parts); everything else
talks to the emulator over HTTP or through the small public surface at the bottom of
:class:`KubeEmulator` (``declare``, ``read``, ``read_all``, ``served``, ``issue_token``).

kmock 0.8 serves discovery, list, watch, get, create, merge/JSON patch and delete over real HTTP,
but (TOOLING.md) never sets ``resourceVersion``/``uid``/``creationTimestamp``/``generation``,
replays every object on every watch (so kopf sees each object as new twice), ignores label and
field selectors, answers a failed JSON-patch ``test`` with 500, and has no garbage collector.
This emulator fixes exactly those:

- every write gets a cluster-wide increasing ``resourceVersion``; creates get ``uid``,
  ``creationTimestamp`` and ``generation: 1``; ``generation`` grows when anything outside
  ``metadata``/``status`` changes (not for ``/status`` writes); ``generateName`` is honoured;
- a patch that changes nothing is answered with the object and writes nothing (no event);
- a list answers the current ``resourceVersion``; a watch from that version replays only newer
  objects, so a list+watch client sees each object once;
- ``labelSelector`` and ``fieldSelector`` filter lists and watches (see ``selectors.py``);
- a failed JSON-patch ``test`` answers 422;
- deleting an object deletes the objects whose ``ownerReferences`` name its uid (background GC);
- every request is recorded with its RBAC verb, resource, namespace and the user its bearer
  token names (:meth:`KubeEmulator.issue_token` hands out service-account tokens), for checks of
  least privilege.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import dicts, enums, rendering

from tests.support.kube.selectors import SelectorError, match_field_selector, match_label_selector

# (resource, kind, namespaced, subresources)
DEFAULT_RESOURCES: tuple[tuple[str, str, bool, tuple[str, ...]], ...] = (
    ("v1/namespaces", "Namespace", False, ("status",)),
    ("v1/pods", "Pod", True, ("status",)),
    ("v1/services", "Service", True, ("status",)),
    ("v1/configmaps", "ConfigMap", True, ()),
    ("v1/secrets", "Secret", True, ()),
    ("v1/events", "Event", True, ()),
    ("v1/persistentvolumeclaims", "PersistentVolumeClaim", True, ("status",)),
    ("apps/v1/deployments", "Deployment", True, ("status", "scale")),
    ("discovery.k8s.io/v1/endpointslices", "EndpointSlice", True, ()),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, ("status",)),
    ("tinyimg.io/v1alpha1/imagemodels", "ImageModel", True, ("status", "scale")),
)
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


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


class _UnprocessableError(kmock.KubernetesError):
    pass


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _with_data(request: rendering.Request, data: Any) -> rendering.Request:
    # kmock matches reactions by the identity of the recorded request, so it is changed in place.
    object.__setattr__(request, "data", data)
    return request


def _changed_outside(old: Mapping[str, Any], new: Mapping[str, Any], skip: set[str]) -> bool:
    keys = (set(old) | set(new)) - skip
    return any(old.get(k) != new.get(k) for k in keys)


def _verb(request: rendering.Request) -> str | None:
    if request.resource is None:
        return None
    method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
    if method == "GET":
        return "watch" if request.params.get("watch") in ("true", "1") else ("get" if request.name else "list")
    named = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if method == "DELETE" and not request.name:
        return "deletecollection"
    return named.get(method)


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus versions, selectors, no-op patches, 422 on failed tests, GC and records."""

    _versions: Iterable[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _current_rv: int = attrs.field(default=0, init=False)
    # Serialises writes so that a version is computed from the state it is applied to.
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _inflight: dict[int, rendering.Request] = attrs.field(factory=dict, init=False)
    _served: list[Served] = attrs.field(factory=list, init=False)
    _tokens: dict[str, str] = attrs.field(factory=dict, init=False)
    url: str = attrs.field(default="", init=False)

    def __iter__(self) -> Iterator[rendering.Request]:
        # kmock matches a request to its reactions by scanning every request seen so far through
        # every reaction's filters: quadratic, minutes for a few thousand requests. Only requests
        # being served can match, so only those are scanned; the full record is served().
        return iter(list(self._inflight.values()))

    # -- the request path ----------------------------------------------------------------------
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._served.append(self._record(request))
        self._inflight[id(request)] = request
        try:
            # Checked up front, as the API server does, not only when an object is compared.
            match_label_selector({}, request.params.get("labelSelector"))
            match_field_selector({}, request.params.get("fieldSelector"))
            return await self._serve(request)
        except SelectorError as exc:
            return await self._render_error(kmock.KubernetesError(status=400, reason="BadRequest", message=str(exc)))
        finally:
            del self._inflight[id(request)]

    def _record(self, request: rendering.Request) -> Served:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        res = request.resource
        return Served(
            method=str(request.method.value if hasattr(request.method, "value") else request.method).upper(),
            path=str(request.url.path),
            verb=_verb(request),
            group=res.group if res is not None else None,
            resource=res.plural if res is not None else None,
            subresource=request.subresource,
            namespace=request.namespace,
            name=request.name,
            user=self._tokens.get(token or ""),
            user_agent=request.headers.get("User-Agent", ""),
        )

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        writes = (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE)
        if request.resource is None or request.action not in writes:
            return await super()._handle(request)
        async with self._write_lock:
            try:
                if request.action == enums.action.CREATE:
                    request = self._stamp_create(request)
                elif request.action == enums.action.UPDATE and request.name is not None:
                    stamped = self._stamp_patch(request)
                    if stamped is None:  # nothing would change: answer like the API server does
                        return aiohttp.web.json_response(self._current(request))
                    request = stamped
            except kmock.KubernetesError as exc:
                return await self._render_error(exc)
            response = await super()._handle(request)
            if request.action == enums.action.DELETE and request.name is not None:
                await self._collect_garbage()
            return response

    def _current(self, request: rendering.Request) -> dict[str, Any]:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return copy.deepcopy(self.objects[key].raw)

    def _stamp_create(self, request: rendering.Request) -> rendering.Request:
        data = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
        meta = data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta.update(
            uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), creationTimestamp=_now(), generation=1
        )
        return _with_data(request, data)

    def _stamp_patch(self, request: rendering.Request) -> rendering.Request | None:
        old = self._current(request)
        try:
            new = dict(dicts.patch_dict(old, request.data or {}))
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPointerException) as exc:
            raise _UnprocessableError(status=422, reason="Invalid", message=str(exc)) from None
        if new == old:
            return None
        extra = {"resourceVersion": self._next_rv()}
        if request.subresource is None and _changed_outside(old, new, {"metadata", "status"}):
            extra["generation"] = int(old.get("metadata", {}).get("generation", 1)) + 1
        if isinstance(request.data, list):
            data: Any = list(request.data) + [
                {"op": "add", "path": f"/metadata/{k}", "value": v} for k, v in extra.items()
            ]
        else:
            data = copy.deepcopy(request.data)
            data.setdefault("metadata", {}).update(extra)
        return _with_data(request, data)

    def _next_rv(self) -> str:
        self._current_rv = next(self._versions)  # type: ignore[call-overload]
        return str(self._current_rv)

    async def _collect_garbage(self) -> None:
        """Delete (in the background-cascade way) every object whose owners are all gone."""
        while True:
            async with self._lock:
                live = {
                    obj.get("metadata", {}).get("uid")
                    for obj in self.objects.values()
                    if not obj.deleted
                }
                orphans = [
                    (key, obj)
                    for key, obj in self.objects.items()
                    if not obj.deleted
                    and (owners := obj.get("metadata", {}).get("ownerReferences"))
                    and not any(o.get("uid") in live for o in owners)
                ]
                for (resource, _, _), obj in orphans:
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": obj.last.raw})
            if not orphans:
                return

    def _selected(self, request: rendering.Request, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        return (
            (request.namespace is None or meta.get("namespace") == request.namespace)
            and (request.name is None or meta.get("name") == request.name)
            and match_label_selector(meta.get("labels") or {}, request.params.get("labelSelector"))
            and match_field_selector(obj, request.params.get("fieldSelector"))
        )

    def _snapshot(self, request: rendering.Request) -> list[dict[str, Any]]:
        return [
            obj.raw
            for (resource, _, _), obj in self.objects.items()
            if resource == request.resource and not obj.deleted and self._selected(request, obj.raw)
        ]

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._snapshot(request)
        return {"metadata": {"resourceVersion": str(self._current_rv)}, "items": items}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now: a quiet watch must still look started
        since = int(request.params.get("resourceVersion") or 0)
        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()  # events after this point come from the bus, none are lost
            replay = [obj for obj in self._snapshot(request) if _rv(obj) > since]
        for obj in sorted(replay, key=_rv):
            yield {"type": "ADDED", "object": obj}
        async for event in mark:
            obj = event.get("object", {})
            if _rv(obj) > since and self._selected(request, obj):
                yield event

    # -- the public surface (what the client helpers and the kubelet use) ------------------------
    def declare(
        self, resource: str, kind: str, namespaced: bool = True, subresources: Iterable[str] = ()
    ) -> None:
        """Make a resource discoverable (clients look it up before they use it)."""
        self.resources[resource] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=VERBS, subresources=set(subresources),
            singular=kind.lower(),
        )

    def is_namespaced(self, resource: str) -> bool:
        return self.resources[resource].namespaced is not False

    def resource_of(self, api_version: str, kind: str) -> str:
        """``("apps/v1", "Deployment")`` → ``"apps/v1/deployments"``; KeyError when not declared."""
        for res, info in self.resources.items():
            declared = res.version if res.group == "" else f"{res.group}/{res.version}"
            if declared == api_version and info.kind == kind:
                return f"{declared}/{res.plural}"
        raise KeyError(f"undeclared resource for {api_version} {kind}")

    def read(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (a copy), or None."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def read_all(
        self, resource: str, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The stored objects of a resource (copies), optionally in one namespace with these labels."""
        wanted = kmock.resource(resource)
        return [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in self.objects.items()
            if res == wanted and not obj.deleted and (namespace is None or ns == namespace)
            and all((obj.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in (labels or {}).items())
        ]

    def served(self) -> list[Served]:
        """Every request served so far, in order."""
        return list(self._served)

    def issue_token(self, user: str) -> str:
        """A bearer token whose requests are recorded as ``user`` (e.g. ``system:serviceaccount:ns:sa``)."""
        token = f"emulated-{secrets.token_hex(8)}"
        self._tokens[token] = user
        return token


@contextlib.asynccontextmanager
async def running_emulator() -> AsyncIterator[KubeEmulator]:
    """A fresh emulated API server on a loopback port (``.url``), the default resources declared."""
    async with KubeEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.url = str(server.url).rstrip("/")
        for resource, kind, namespaced, subresources in DEFAULT_RESOURCES:
            emulator.declare(resource, kind, namespaced, subresources)
        yield emulator

