"""Test-side helpers over the emulated API: read objects directly, write them over HTTP.

Import the fixture with ``from tests.support.kube import kube  # noqa: F401``; then, in an async
test (function scope) that takes ``kube``::

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
    assert kube.get("v1/pods", "default", "p1") is None   # the test's own asserts on real values

Resources are named like ``"v1/pods"``, ``"apps/v1/deployments"``, ``"tinyimg.io/v1alpha1/imagemodels"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
import yaml

from tests.support.kube.emulator import KubeEmulator, Served, api_path, running_emulator

# Requests sent by these helpers carry this User-Agent, so writes() can leave them out.
HELPER_AGENT = "tinyimg-tests-kube-helper"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def kubeconfig(url: str, token: str = "test-token", namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig (as a dict) for an API server at ``url`` with a bearer token."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": {"server": url}}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "user", "namespace": namespace}}],
        "current-context": "emulated",
    }


@dataclass
class Kube:
    """What the ``kube`` fixture yields: the emulator's URL and direct read/write helpers."""

    emulator: KubeEmulator
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.emulator.url

    def declare(self, resource: str, kind: str, namespaced: bool = True, subresources: Iterable[str] = ()) -> None:
        self.emulator.declare(resource, kind, namespaced, subresources)

    def write_kubeconfig(self, path: Path, namespace: str = "default", user: str | None = None) -> Path:
        """A kubeconfig for this emulator (KUBECONFIG for kopf, the router, kubectl and helm).
        With ``user``, its requests are recorded as that user (see ``KubeEmulator.issue_token``)."""
        token = self.emulator.issue_token(user) if user else "test-token"
        path.write_text(yaml.safe_dump(kubeconfig(self.url, token, namespace)))
        return path

    # -- reading: straight from memory, synchronous --------------------------------------------
    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.emulator.read(resource, namespace, name)

    def list(
        self, resource: str, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        return self.emulator.read_all(resource, namespace, labels)

    def requests(self) -> list[Served]:
        """Every request served so far, in order."""
        return self.emulator.served()

    def writes(self, resource: str | None = None) -> list[Served]:
        """Write requests from clients under test (these helpers' own are left out)."""
        return [
            r for r in self.emulator.served()
            if r.verb in WRITE_VERBS and r.user_agent != HELPER_AGENT
            and (resource is None or r.resource == resource.rsplit("/", 1)[-1])
        ]

    # -- writing: over HTTP, so versions are stamped and watchers see events -------------------
    async def _call(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> dict[str, Any]:
        headers = {"User-Agent": HELPER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, path, data=data, headers=headers) as resp:
            payload = await resp.json(content_type=None)
            if resp.status >= 400:
                raise AssertionError(f"{method} {path} -> {resp.status}: {payload.get('message')}")
            return payload

    path = staticmethod(api_path)

    async def create(self, obj: Mapping[str, Any], resource: str | None = None) -> dict[str, Any]:
        """Create an object; the resource is found from apiVersion/kind when not given."""
        resource = resource or self.emulator.resource_of(obj.get("apiVersion", ""), obj.get("kind", ""))
        namespace = obj.get("metadata", {}).get("namespace") if self.emulator.is_namespaced(resource) else None
        return await self._call("POST", api_path(resource, namespace), dict(obj))

    async def patch(self, resource: str, namespace: str | None, name: str, patch: Any) -> dict[str, Any]:
        ctype = "application/json-patch+json" if isinstance(patch, list) else "application/merge-patch+json"
        return await self._call("PATCH", api_path(resource, namespace, name), patch, ctype)

    async def patch_status(self, resource: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``status`` into the object through its /status subresource (what a controller does)."""
        path = api_path(resource, namespace, name, "status")
        return await self._call("PATCH", path, {"status": dict(status)}, "application/merge-patch+json")

    async def delete(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        return await self._call("DELETE", api_path(resource, namespace, name))

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


@contextlib.asynccontextmanager
async def running_kube() -> AsyncIterator[Kube]:
    """A fresh emulated Kubernetes API on a loopback port, with helpers (outside pytest too)."""
    async with running_emulator() as emulator, aiohttp.ClientSession(emulator.url) as session:
        yield Kube(emulator, session)


@pytest_asyncio.fixture()
async def kube() -> AsyncIterator[Kube]:
    """The emulator for one test (see :func:`running_kube`)."""
    async with running_kube() as api:
        yield api
