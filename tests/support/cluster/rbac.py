"""RBAC as the API server's authorizer applies it, for checking least privilege by use (pure).

:func:`grants` expands the Roles and ClusterRoles bound to a ServiceAccount into single
permissions (namespace or None for cluster-wide, API group, resource[/subresource], verb);
:func:`allows` says whether one recorded request (``Served``) is covered by them. Requests that
name no resource (discovery, ``/version``, ``/openapi``) are left out: every authenticated user
may make them (the built-in ``system:discovery`` role).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Grant:
    namespace: str | None  # None: every namespace and cluster-scoped objects (a ClusterRoleBinding)
    group: str
    resource: str  # "pods", "imagemodels/status"
    verb: str


def _subject_matches(binding: Mapping[str, Any], namespace: str, name: str) -> bool:
    return any(s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace", namespace) == namespace
               for s in binding.get("subjects") or [])


def _expand(rules: Iterable[Mapping[str, Any]], namespace: str | None) -> set[Grant]:
    return {
        Grant(namespace, group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


def grants(
    sa_namespace: str, sa_name: str, roles: list[dict[str, Any]], role_bindings: list[dict[str, Any]],
    cluster_roles: list[dict[str, Any]], cluster_role_bindings: list[dict[str, Any]],
) -> set[Grant]:
    by_name = {("Role", r["metadata"]["namespace"], r["metadata"]["name"]): r for r in roles}
    by_name.update({("ClusterRole", None, r["metadata"]["name"]): r for r in cluster_roles})
    result: set[Grant] = set()
    for binding in role_bindings:
        if _subject_matches(binding, sa_namespace, sa_name):
            ref = binding["roleRef"]
            ns = binding["metadata"]["namespace"]
            role = by_name.get((ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"]))
            result |= _expand((role or {}).get("rules") or [], ns)
    for binding in cluster_role_bindings:
        if _subject_matches(binding, sa_namespace, sa_name):
            role = by_name.get(("ClusterRole", None, binding["roleRef"]["name"]))
            result |= _expand((role or {}).get("rules") or [], None)
    return result


def requested(served: Any) -> Grant | None:
    """The permission one recorded request needs, or None for a non-resource request."""
    if served.verb is None or served.resource is None:
        return None
    resource = f"{served.resource}/{served.subresource}" if served.subresource else served.resource
    return Grant(served.namespace, served.group or "", resource, served.verb)


def allows(granted: set[Grant], need: Grant) -> bool:
    for g in granted:
        if g.namespace is not None and g.namespace != need.namespace:
            continue
        if g.group not in ("*", need.group) or g.verb not in ("*", need.verb):
            continue
        if g.resource in ("*", need.resource):
            return True
    return False


def used(granted: Grant, needs: Iterable[Grant]) -> bool:
    return any(allows({granted}, need) for need in needs)
