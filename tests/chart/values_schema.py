"""The `models` part of charts/tinyimg/values.schema.json, built from the generated CRD.

Unknown fields in an ImageModel are pruned silently by the API server; with this schema `helm
lint/install` names a misspelt model field instead. Kubernetes' OpenAPI v3 is turned into the JSON
Schema helm reads: `nullable` becomes a "null" type, boolean exclusive bounds become numbers, and
objects with fixed properties refuse others. Regenerate with `make generate`
(`python -m tests.chart.values_schema`); test_values_schema.py fails when it drifts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "imagemodels.tinyimg.io.yaml"
VALUES_SCHEMA = ROOT / "charts" / "tinyimg" / "values.schema.json"


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
    from tinyimg.spec import ModelSpec

    [version] = crd["spec"]["versions"]
    spec = to_json_schema(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    name = {k: v for k, v in ModelSpec.model_json_schema(by_alias=True)["properties"]["name"].items() if k != "title"}
    return {
        **spec,
        "properties": {"name": name, **spec["properties"]},
        "required": ["name", *spec.get("required", [])],
    }


def read_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD.read_text())


def main() -> None:
    schema = json.loads(VALUES_SCHEMA.read_text())
    schema["properties"]["models"]["items"] = build_model_item_schema(read_crd())
    VALUES_SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")


if __name__ == "__main__":
    main()
