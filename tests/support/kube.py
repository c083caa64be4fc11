"""An in-memory Kubernetes API for tests: kmock's emulator with the gaps that matter filled in.

kmock 0.8 serves discovery, list, watch, get, create, merge/JSON patch and delete over real HTTP,
but (TOOLING.md) never sets ``resourceVersion``/``uid``/``creationTimestamp``/``generation``,
replays every object on every watch (so kopf sees each object as new twice), ignores label and
field selectors, answers a failed JSON-patch ``test`` with 500, and has no garbage collector.
:class:`KubeEmulator` fixes exactly those:

- every write gets a cluster-wide increasing ``resourceVersion``; creates get ``uid``,
  ``creationTimestamp`` and ``generation: 1``; ``generation`` grows when anything outside
  ``metadata``/``status`` changes (not for ``/status`` writes); ``generateName`` is honoured;
- a patch that changes nothing is answered with the object and writes nothing (no event);
- a list answers the current ``resourceVersion``; a watch from that version replays only newer
  objects, so a list+watch client sees each object once;
- ``labelSelector`` (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``) and
  ``fieldSelector`` (``metadata.name``, ``metadata.namespace``) filter lists and watches;
- a failed JSON-patch ``test`` answers 422;
- deleting an object deletes the objects whose ``ownerReferences`` name its uid (background GC).

Still missing: PUT (404), strategic-merge semantics (lists are replaced), server-side apply,
schema validation and defaulting, controllers (a Deployment never becomes ready by itself:
patch its status with :meth:`Kube.patch_status`).

Use from a test (async, function scope)::

    from tests.support.kube import kube  # noqa: F401  (the fixture)

    async def test_something(kube):
        kube.url                                 # "http://127.0.0.1:PORT" for any client
        kube.write_kubeconfig(tmp_path / "kc")   # a kubeconfig pointing at it (for KUBECONFIG)
        await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {...}, ...})
        pod = kube.get("v1/pods", "default", "p1")          # dict or None, read directly
        kube.list("v1/pods", "default", labels={"app": "x"})
        await kube.patch("v1/pods", "default", "p1", {"metadata": {"labels": {...}}})
        await kube.patch_status("apps/v1/deployments", "default", "d", {"readyReplicas": 1})
        await kube.delete("v1/pods", "default", "p1")
        kube.writes()                            # write requests sent by clients other than these helpers
        await kube.wait_for(lambda: kube.get(...) is not None)

    # a real kopf operator in the same loop (stop/start again to test restarts):
    op = KopfOperator("tinyimg_operator.handlers"); await op.start(); ...; await op.stop()

Resources are named like ``"v1/pods"``, ``"apps/v1/deployments"``, ``"tinyimg.io/v1alpha1/imagemodels"``.
Core v1 (pods, services, configmaps, secrets, events, namespaces, persistentvolumeclaims),
apps/v1 deployments, discovery.k8s.io/v1 endpointslices, apiextensions CRDs and the ImageModel
CRD are declared for discovery; declare more with :meth:`Kube.declare`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import pytest_asyncio
import yaml
from kmock._internal import dicts, enums, rendering

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
# Requests sent by this module's helpers carry this User-Agent, so writes() can leave them out.
HELPER_AGENT = "tinyimg-tests-kube-helper"


class _UnprocessableError(kmock.KubernetesError):
    pass


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


_SELECTOR_TERM = re.compile(
    r"^\s*(?:(?P<neg>!)?(?P<key>[^!=\s,()]+)\s*(?:(?P<op>==|!=|=)\s*(?P<val>[^,\s]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?\s*)$"
)


def _split_selector(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t for t in terms if t.strip()]


def match_label_selector(labels: Mapping[str, str], selector: str | None) -> bool:
    """Kubernetes label-selector string semantics (equality- and set-based)."""
    for term in _split_selector(selector or ""):
        m = _SELECTOR_TERM.match(term)
        if not m:
            raise _UnprocessableError(status=400, reason="BadRequest", message=f"bad selector {term!r}")
        key, value = m["key"], labels.get(m["key"])
        if m["setop"]:
            values = {v.strip() for v in m["set"].split(",")}
            ok = value in values if m["setop"] == "in" else value not in values
        elif m["op"]:
            ok = value == m["val"] if m["op"] in ("=", "==") else value != m["val"]
        else:
            ok = (key in labels) != bool(m["neg"])
        if not ok:
            return False
    return True


def match_field_selector(obj: Mapping[str, Any], selector: str | None) -> bool:
    meta = obj.get("metadata", {})
    for term in _split_selector(selector or ""):
        key, op, value = re.match(r"^\s*([^!=]+?)\s*(==|!=|=)\s*(.*?)\s*$", term).groups()
        actual = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}.get(key)
        if (actual == value) != (op in ("=", "==")):
            return False
    return True


def _with_data(request: rendering.Request, data: Any) -> rendering.Request:
    # kmock matches reactions by the identity of the recorded request, so it is changed in place.
    object.__setattr__(request, "data", data)
    return request


def _changed_outside(old: Mapping[str, Any], new: Mapping[str, Any], skip: set[str]) -> bool:
    keys = (set(old) | set(new)) - skip
    return any(old.get(k) != new.get(k) for k in keys)


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus versions, selectors, no-op patches, 422 on failed tests and GC."""

    _versions: Iterable[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _current_rv: int = attrs.field(default=0, init=False)
    # Serialises writes so that a version is computed from the state it is applied to.
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _inflight: dict[int, rendering.Request] = attrs.field(factory=dict, init=False)

    def __iter__(self) -> Iterator[rendering.Request]:
        # kmock matches a request to its reactions by scanning every request seen so far through
        # every reaction's filters: quadratic, minutes for a few thousand requests. Only requests
        # being served can match, so only those are scanned; the full history is history().
        return iter(list(self._inflight.values()))

    def history(self) -> list[rendering.Request]:
        """Every request served so far, in order."""
        return list(self._requests)

    def _next_rv(self) -> str:
        self._current_rv = next(self._versions)  # type: ignore[call-overload]
        return str(self._current_rv)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._inflight[id(request)] = request
        try:
            return await self._serve(request)
        finally:
            del self._inflight[id(request)]

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


@attrs.define
class Kube:
    """What the ``kube`` fixture yields: the emulator's URL and direct read/write helpers."""

    emulator: KubeEmulator
    server: kmock.Server

    @property
    def url(self) -> str:
        return str(self.server.url).rstrip("/")

    def declare(self, resource: str, kind: str, namespaced: bool = True, subresources: Iterable[str] = ()) -> None:
        """Make a resource discoverable (kopf and the kubernetes client look it up first)."""
        self.emulator.resources[resource] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=VERBS, subresources=set(subresources),
            singular=kind.lower(),
        )

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig for this emulator (for KUBECONFIG, kopf's login and the kubernetes client)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "tests", "user": {"token": "test-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tests", "namespace": namespace}}],
            "current-context": "kmock",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- reading: straight from memory, synchronous --------------------------------------------
    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            return None
        return copy.deepcopy(self.emulator.objects[key].raw)

    def list(
        self, resource: str, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        wanted = kmock.resource(resource)
        return [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in self.emulator.objects.items()
            if res == wanted and not obj.deleted and (namespace is None or ns == namespace)
            and all((obj.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in (labels or {}).items())
        ]

    def requests(self) -> list[rendering.Request]:
        """Every request served so far, in order (kmock's request objects)."""
        return self.emulator.history()

    def writes(self, resource: str | None = None) -> list[rendering.Request]:
        """Create/patch/delete requests from clients under test (the helpers' own are left out)."""
        kinds = (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE)
        return [
            r for r in self.emulator.history()
            if r.action in kinds and r.headers.get("User-Agent") != HELPER_AGENT
            and (resource is None or r.resource == kmock.resource(resource))
        ]

    # -- writing: over HTTP, so versions are stamped and watchers see events -------------------
    async def _call(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> dict[str, Any]:
        headers = {"User-Agent": HELPER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        data = None if body is None else json.dumps(body)
        async with self.server.client.request(method, path, data=data, headers=headers) as resp:
            payload = await resp.json(content_type=None)
            if resp.status >= 400:
                raise AssertionError(f"{method} {path} -> {resp.status}: {payload.get('message')}")
            return payload

    @staticmethod
    def path(resource: str, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        res = kmock.resource(resource)
        base = f"/api/{res.version}" if res.group == "" else f"/apis/{res.group}/{res.version}"
        parts = [base] + ([f"namespaces/{namespace}"] if namespace else []) + [res.plural]
        parts += [name] if name else []
        parts += [subresource] if subresource else []
        return "/".join(parts)

    async def create(self, obj: Mapping[str, Any], resource: str | None = None) -> dict[str, Any]:
        """Create an object; the resource is found from apiVersion/kind when not given."""
        resource = resource or self._resource_of(obj)
        namespace = obj.get("metadata", {}).get("namespace") if self._namespaced(resource) else None
        return await self._call("POST", self.path(resource, namespace), dict(obj))

    async def patch(self, resource: str, namespace: str | None, name: str, patch: Any) -> dict[str, Any]:
        ctype = "application/json-patch+json" if isinstance(patch, list) else "application/merge-patch+json"
        return await self._call("PATCH", self.path(resource, namespace, name), patch, ctype)

    async def patch_status(self, resource: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``status`` into the object through its /status subresource (what a controller does)."""
        path = self.path(resource, namespace, name, "status")
        return await self._call("PATCH", path, {"status": dict(status)}, "application/merge-patch+json")

    async def delete(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        return await self._call("DELETE", self.path(resource, namespace, name))

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
        """Poll until ``predicate()`` is truthy; return its value, or fail with the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s: {predicate}")
            await asyncio.sleep(interval)

    def _resource_of(self, obj: Mapping[str, Any]) -> str:
        for res, info in self.emulator.resources.items():
            api_version = res.version if res.group == "" else f"{res.group}/{res.version}"
            if api_version == obj.get("apiVersion") and info.kind == obj.get("kind"):
                return f"{api_version}/{res.plural}"
        raise KeyError(f"undeclared resource for {obj.get('apiVersion')} {obj.get('kind')}")

    def _namespaced(self, resource: str) -> bool:
        return self.emulator.resources[resource].namespaced is not False


class KopfOperator:
    """A real kopf operator (handlers of ``module``) in the current event loop; start/stop repeatable.

    Log it in through a kubeconfig (``Kube.write_kubeconfig`` + ``KUBECONFIG``) or a login handler.
    """

    def __init__(self, module: str, namespaces: tuple[str, ...] = ()) -> None:
        """``namespaces``: watch only these (like ``--namespace``); none: cluster-wide.

        Namespaced, kopf's namespace scanning is off: a namespaced Role answers its list of
        namespaces with 403, and kopf then serves the named namespaces, which is what this gives
        (kmock cannot answer ``GET /api/v1/namespaces`` at all)."""
        self.module = module
        self.namespaces = namespaces
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def start(self, timeout: float = 10.0) -> None:
        import importlib

        import kopf

        importlib.import_module(self.module)  # registers its handlers in kopf's default registry
        settings = kopf.OperatorSettings()
        settings.scanning.disabled = bool(self.namespaces)
        self._stop, ready = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(
            kopf.operator(clusterwide=not self.namespaces, namespaces=self.namespaces, settings=settings,
                          standalone=True, stop_flag=self._stop, ready_flag=ready)
        )
        await asyncio.wait_for(ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        # kopf's graceful exit waits for idle per-object workers (seconds); a test needs no grace.
        done, _ = await asyncio.wait([self._task], timeout=0.5)
        if not done:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


@contextlib.asynccontextmanager
async def running_kube() -> AsyncIterator[Kube]:
    """A fresh emulated Kubernetes API on a loopback port, with the default resources declared."""
    async with KubeEmulator() as emulator, kmock.Server(emulator) as server:
        api = Kube(emulator, server)
        for resource, kind, namespaced, subresources in DEFAULT_RESOURCES:
            api.declare(resource, kind, namespaced, subresources)
        yield api


@pytest_asyncio.fixture()
async def kube() -> AsyncIterator[Kube]:
    """The emulator for one test (see :func:`running_kube`; outside pytest use that directly)."""
    async with running_kube() as api:
        yield api
