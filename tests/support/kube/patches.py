"""The three patch kinds of the Kubernetes API, as pure functions of (object, patch) → object.

- JSON patch (RFC 6902, ``application/json-patch+json``): a failed ``test`` is :class:`PatchError`
  (the API server answers 422);
- JSON merge patch (RFC 7386, ``application/merge-patch+json``): lists are replaced, ``null``
  deletes;
- strategic merge patch (``application/strategic-merge-patch+json``, what kubectl apply and helm
  upgrade send for built-in kinds): lists of objects with a patch merge key are merged item by
  item. The real server reads the merge key of each field from the Go types; here it is read from
  :data:`MERGE_KEYS` by field name, which is right for every built-in field the chart and the
  operator write (containers, env, ports, volumes, volumeMounts, conditions, ...). The directives
  ``$patch`` (replace/delete/merge), ``$retainKeys``, ``$deleteFromPrimitiveList/<field>`` and
  ``$setElementOrder/<field>`` are honoured (the last one reorders nothing: order is kept).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

# field name → the key that identifies an item of that list (the Go types' patchMergeKey)
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ports": "containerPort",  # a Service's ports use "port": see _merge_key
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}


class PatchError(ValueError):
    """A patch the API server would refuse (422)."""


def json_patch(obj: dict[str, Any], patch: list[Any]) -> dict[str, Any]:
    try:
        return jsonpatch.apply_patch(obj, patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(str(exc)) from None


def merge_patch(obj: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(obj) if isinstance(obj, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    key = MERGE_KEYS.get(field)
    if field == "ports" and any(isinstance(i, dict) and "port" in i and "containerPort" not in i for i in items):
        return "port"  # a Service's ports
    return key


def strategic_merge_patch(obj: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(obj) if isinstance(obj, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, old: list[Any], patch: list[Any]) -> list[Any]:
    key = _merge_key(field, old + patch)
    if key is None or not all(isinstance(i, dict) for i in old + patch):
        return [i for i in copy.deepcopy(patch) if not (isinstance(i, dict) and i.get("$patch"))]
    if any(i.get("$patch") == "replace" for i in patch):
        return [{k: v for k, v in i.items() if k != "$patch"} for i in patch if i.get("$patch") != "replace"]
    result = copy.deepcopy(old)
    for item in patch:
        at = next((n for n, existing in enumerate(result) if existing.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del result[at]
        elif at is None:
            result.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            result[at] = strategic_merge_patch(result[at], item)
    return result


def apply_patch(obj: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """Dispatch on the request's Content-Type, as the API server does."""
    if "json-patch" in content_type:
        if not isinstance(patch, list):
            raise PatchError("a JSON patch must be a list of operations")
        return json_patch(obj, patch)
    if not isinstance(patch, dict):
        raise PatchError("a merge patch must be an object")
    if "strategic-merge-patch" in content_type:
        return strategic_merge_patch(obj, patch)
    return merge_patch(obj, patch)
