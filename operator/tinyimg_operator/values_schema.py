"""The `models` and `server` parts of the chart's values.schema.json, built from the ImageModel CRD (pure).

Unknown fields in an ImageModel are pruned silently by the API server; with this schema `helm
lint/install` names a misspelt model field instead. Kubernetes' OpenAPI v3 is turned into the JSON
Schema helm reads: `nullable` becomes a "null" type, boolean exclusive bounds become numbers, and
objects with fixed properties refuse others. `tinyimg-operator values-schema` writes it (`make
generate`); tests/chart/test_imagemodels.py fails when the shipped file drifts.
"""

from __future__ import annotations

from typing import Any

from tinyimg.core.tenants import TenantSpec
from tinyimg.spec import ModelSpec


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k not in ("nullable", "default")}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:
            out[bound] = out.pop(limit)
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in out:
        out["properties"] = {k: to_json_schema(v) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    elif isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(out["additionalProperties"])
    if "items" in out:
        out["items"] = to_json_schema(out["items"])
    return out


def build_model_item_schema(crd: dict[str, Any]) -> dict[str, Any]:
    """One `models:` entry: the ImageModel spec plus `name` (its metadata.name)."""
    [version] = crd["spec"]["versions"]
    spec = to_json_schema(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    name = {k: v for k, v in ModelSpec.model_json_schema(by_alias=True)["properties"]["name"].items() if k != "title"}
    return {
        **spec,
        "properties": {"name": name, **spec["properties"]},
        "required": ["name", *spec.get("required", [])],
    }


def build_values_schema(shipped: dict[str, Any], crd: dict[str, Any]) -> dict[str, Any]:
    """The chart's hand-written values schema with `models.items` generated from the CRD, and
    `server` from the same schema's `spec.server` (PodServerSettings: every model pod's settings)."""
    schema = dict(shipped)
    properties = dict(schema["properties"])
    properties["models"] = {**properties["models"], "items": build_model_item_schema(crd)}
    [version] = crd["spec"]["versions"]
    server = to_json_schema(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["server"])
    properties["server"] = {**server, "type": "object"}
    router = dict(properties["router"])
    router["properties"] = {**router["properties"], "tenants": {"type": "array", "items": build_tenant_item_schema()}}
    properties["router"] = router
    schema["properties"] = properties
    return schema


def build_tenant_item_schema() -> dict[str, Any]:
    """One `router.tenants` entry: the keys file's own tenant schema (tinyimg.core.tenants)."""
    schema = TenantSpec.model_json_schema(by_alias=True)

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            if "anyOf" in node:  # pydantic's "X or null": JSON Schema's type list
                types = [n for n in node["anyOf"] if n.get("type") != "null"]
                merged = {**{k: v for k, v in node.items() if k not in ("anyOf", "default", "title")}, **types[0]}
                merged["type"] = [types[0]["type"], "null"]
                return clean(merged)
            return {k: clean(v) for k, v in node.items() if k not in ("title", "default")}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return {**clean(schema), "additionalProperties": False}
