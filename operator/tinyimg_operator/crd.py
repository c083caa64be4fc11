"""The ImageModel CustomResourceDefinition, generated from ModelSpec (pure).

pydantic's JSON schema is not a Kubernetes structural schema, so it is converted: ``$ref`` is
inlined, ``anyOf [X, null]`` becomes ``X`` + ``nullable``, ``const`` becomes a one-value enum,
numeric ``exclusiveMinimum: N`` becomes ``minimum: N, exclusiveMinimum: true``, and ``title``,
``additionalProperties: false`` (not allowed beside ``properties``) and null defaults go.
"""

from __future__ import annotations

from typing import Any

from tinyimg.core import labels
from tinyimg.core.status import ImageModelStatus
from tinyimg.spec import ModelSpec

_DROP = {"title", "$defs"}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node -> a structural OpenAPI v3 node."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return structural({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf with {len(options)} non-null options structurally")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        node = structural({**options[0], **rest}, defs)
        if len(options) < len(schema["anyOf"]):
            node["nullable"] = True
        return node
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "additionalProperties":
            if value is not False:
                out[key] = structural(value, defs)
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = _json_type(out["enum"][0])
    return out


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]


def build_spec_schema() -> dict[str, Any]:
    """ModelSpec minus ``name`` (the resource's metadata.name), as a structural schema."""
    raw = ModelSpec.model_json_schema(by_alias=True, mode="validation")
    raw["properties"].pop("name")
    raw["required"] = [r for r in raw.get("required", []) if r != "name"]
    schema = structural(raw, raw.get("$defs", {}))
    # The one cross-field rule the API server can check itself (CEL); the operator checks it too.
    schema["properties"]["autoscaling"]["x-kubernetes-validations"] = [{
        "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        # No fieldPath: Kubernetes 1.25-1.27 refuse it; the message names the field instead.
        "message": "autoscaling.minReplicas must not be over autoscaling.maxReplicas",
    }]
    return schema


def build_status_schema() -> dict[str, Any]:
    """ImageModelStatus (tinyimg.core.status) as a structural schema, without defaults: a status is
    what the operator writes, never filled in by the API server."""
    raw = ImageModelStatus.model_json_schema(by_alias=True, mode="serialization")
    schema: dict[str, Any] = drop_defaults(structural(raw, raw.get("$defs", {})))
    return schema


def drop_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: drop_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [drop_defaults(v) for v in node]
    return node


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{labels.PLURAL}.{labels.GROUP}",
            "labels": {labels.NAME: labels.APP_NAME, labels.COMPONENT: labels.COMPONENT_OPERATOR},
        },
        "spec": {
            "group": labels.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": labels.KIND,
                "listKind": f"{labels.KIND}List",
                "plural": labels.PLURAL,
                "singular": labels.KIND.lower(),
                "shortNames": [labels.SHORT_NAME],
            },
            "versions": [
                {
                    "name": labels.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "One image model served by TinyIMGserver model-server pods.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": build_spec_schema(),
                                "status": build_status_schema(),
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Family", "type": "string", "jsonPath": ".spec.family"},
                        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas",
                         "description": "Ready replicas"},
                        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas",
                         "description": "spec.replicas, or the autoscaler's decision"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {"name": "Load", "type": "number", "jsonPath": ".status.autoscaling.load", "priority": 1},
                        {"name": "Scaling", "type": "string", "jsonPath": ".status.autoscaling.reason", "priority": 1},
                        {"name": "Revisions", "type": "string", "jsonPath": ".status.rollout", "priority": 1,
                         "description": "Each revision's share of requests and phase"},
                    ],
                }
            ],
        },
    }
