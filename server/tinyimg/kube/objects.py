"""Pure readings of Kubernetes objects (plain dicts as the API serves them)."""

from __future__ import annotations

from typing import Any

from tinyimg.core import labels


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


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference marked ``controller: true`` (at most one per object), else None."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return next((r for r in refs if isinstance(r, dict) and r.get("controller") is True), None)
