"""Discovery documents and server-side Tables, as pure functions of the served resources.

Only the legacy discovery format is served (``APIVersions``, ``APIGroupList``, ``APIGroup``,
``APIResourceList``): kubectl and client-go ask for aggregated discovery first and fall back to it
when the answer's Content-Type is plain JSON. A Table (``Accept: ...;as=Table``) has the Name
column, a CRD's ``additionalPrinterColumns`` (ages for ``date`` columns, as the API server
renders them) and, for built-in kinds, Age: enough for ``kubectl get`` to print what a cluster
prints for our CRD, and a readable fallback for built-in kinds.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from tests.support.kube.crd import ResourceInfo, printer_cells

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = ["get", "patch", "update"]
SERVER_VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "emulated", "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group_versions(resources: Iterable[ResourceInfo]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for info in resources:
        if info.group and info.version not in groups.setdefault(info.group, []):
            groups[info.group].append(info.version)
    return groups


def api_group_list(resources: Iterable[ResourceInfo]) -> dict[str, Any]:
    groups = group_versions(resources)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g, v) for g, v in sorted(groups.items())]}


def api_group(resources: Iterable[ResourceInfo], group: str) -> dict[str, Any] | None:
    versions = group_versions(resources).get(group)
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)} if versions else None


def api_resource_list(resources: Iterable[ResourceInfo], group: str, version: str) -> dict[str, Any] | None:
    served = [r for r in resources if (r.group, r.version) == (group, version)]
    if not served:
        return None
    entries = []
    for info in sorted(served, key=lambda r: r.plural):
        entries.append({
            "name": info.plural, "singularName": info.kind.lower(), "namespaced": info.namespaced,
            "kind": info.kind, "verbs": VERBS, "shortNames": list(info.short_names),
            "categories": list(info.categories),
        })
        for sub in info.subresources:
            entry = {"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
                     "kind": info.kind, "verbs": SUBRESOURCE_VERBS}
            if sub == "scale":
                entry.update(group="autoscaling", version="v1", kind="Scale")
            entries.append(entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": served[0].api_version, "resources": entries}


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """``"2026-01-01T00:00:00Z"`` → ``"5s"``/``"3m"``/``"2h"``/``"4d"``, as kubectl shows ages."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(tz=datetime.UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def table(info: ResourceInfo, objects: list[dict[str, Any]], resource_version: str) -> dict[str, Any]:
    columns = info.printer_columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    definitions += [
        {"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
         "description": c.get("description", ""), "priority": c.get("priority", 0)}
        for c in columns
    ]
    rows = []
    for obj in objects:
        cells = [age(v) if c.get("type") == "date" else ("<none>" if v is None else v)
                 for c, v in zip(columns, printer_cells(obj, columns), strict=True)]
        rows.append({
            "cells": [obj["metadata"]["name"], *cells],
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]},
        })
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}


def openapi_v3_index(resources: Iterable[ResourceInfo]) -> dict[str, Any]:
    """``/openapi/v3``: one document per group-version."""
    paths = {}
    for info in resources:
        prefix = f"api/{info.version}" if info.group == "" else f"apis/{info.group}/{info.version}"
        paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash=emulated"}
    return {"paths": paths}


def openapi_v3_group_version(resources: Iterable[ResourceInfo], group: str, version: str) -> dict[str, Any] | None:
    """A group-version's OpenAPI v3 document with only what clients look up in it: each object path's
    PATCH operation, tagged with its kind and declaring ``fieldValidation``, from which kubectl and
    helm learn that the server validates fields (``fieldValidation=Strict``) and skip client-side
    validation, so no schemas are needed."""
    served = [r for r in resources if (r.group, r.version) == (group, version)]
    if not served:
        return None
    paths = {}
    for info in served:
        base = f"/api/{version}" if group == "" else f"/apis/{group}/{version}"
        scope = "/namespaces/{namespace}" if info.namespaced else ""
        gvk = {"group": group, "version": version, "kind": info.kind}
        paths[f"{base}{scope}/{info.plural}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{info.kind}",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (emulated)", "version": "v1.31.0"},
            "paths": paths, "components": {"schemas": {}}}
