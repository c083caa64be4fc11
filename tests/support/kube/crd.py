"""What an API server does with a custom resource because of its CRD, as pure functions:

- :func:`resource_from_crd`: the resource a CRD serves (names, scope, subresources, printer
  columns, schema), so creating the CRD makes its resource discoverable;
- :func:`admit`: defaulting (``default``), pruning of unknown fields (or, with
  ``fieldValidation=Strict`` as kubectl sends, an error naming them) and validation against the
  structural ``openAPIV3Schema`` with ``jsonschema``; a refused object is :class:`InvalidError`
  with one cause per field, which the server answers as 422 ``Invalid``;
- :func:`printer_cells`: the values of ``additionalPrinterColumns`` (the JSONPath forms CRDs use:
  ``.a.b``, ``.a[0]``, ``.a[?(@.k=="v")].b``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema


@dataclass
class ResourceInfo:
    """One served resource, as discovery, tables and admission need it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    schema: dict[str, Any] | None = None
    scale: dict[str, str] | None = None  # specReplicasPath, statusReplicasPath, labelSelectorPath

    @property
    def api_version(self) -> str:
        return self.version if self.group == "" else f"{self.group}/{self.version}"

    @property
    def key(self) -> str:
        return f"{self.api_version}/{self.plural}"


@dataclass
class InvalidError(ValueError):
    """An object the API server refuses (422 Invalid); ``causes`` are (field, message)."""

    causes: list[tuple[str, str]]

    def __str__(self) -> str:
        return "; ".join(f"{f}: {m}" for f, m in self.causes)


def resource_from_crd(crd: dict[str, Any]) -> list[ResourceInfo]:
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    infos = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        infos.append(ResourceInfo(
            group=spec.get("group", ""),
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            subresources=tuple(sorted(subresources)),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            printer_columns=list(version.get("additionalPrinterColumns") or []),
            schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            scale=subresources.get("scale"),
        ))
    return infos


# -- admission ------------------------------------------------------------------------------
def to_json_schema(schema: Any) -> Any:
    """OpenAPI v3 structural schema → JSON Schema: ``nullable`` and ``x-kubernetes-int-or-string``."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True and limit in out:  # OpenAPI 3.0's boolean form -> Draft 7's number
            out[bound] = out.pop(limit)
        elif out.get(bound) is False:
            del out[bound]
    return out


def _default(obj: Any, schema: dict[str, Any]) -> Any:
    if isinstance(obj, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = _default(obj[name], sub)
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for name in obj:
            obj[name] = _default(obj[name], schema["additionalProperties"])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [_default(item, schema["items"]) for item in obj]
    return obj


def _prune(obj: Any, schema: dict[str, Any], path: str, unknown: list[str]) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields") or not isinstance(obj, (dict, list)):
        return obj
    if isinstance(obj, list):
        items = schema.get("items")
        return [_prune(item, items, f"{path}[{n}]", unknown) for n, item in enumerate(obj)] if isinstance(items, dict) else obj
    if "properties" in schema:
        kept = {}
        for name, value in obj.items():
            if name in schema["properties"]:
                kept[name] = _prune(value, schema["properties"][name], f"{path}.{name}".lstrip("."), unknown)
            else:
                unknown.append(f"{path}.{name}".lstrip("."))
        return kept
    if isinstance(schema.get("additionalProperties"), dict):
        return {k: _prune(v, schema["additionalProperties"], f"{path}.{k}".lstrip("."), unknown) for k, v in obj.items()}
    return obj


def admit(obj: dict[str, Any], schema: dict[str, Any] | None, strict: bool = False) -> dict[str, Any]:
    """Default, prune and validate ``obj`` against a CRD version's ``openAPIV3Schema``."""
    if not schema:
        return obj
    obj = _default(copy.deepcopy(obj), schema)
    unknown: list[str] = []
    # metadata is the API server's own (ObjectMeta), never pruned by the CRD's schema
    pruned = _prune({k: v for k, v in obj.items() if k != "metadata"}, schema, "", unknown)
    obj = {**pruned, "metadata": obj.get("metadata", {})}
    if strict and unknown:
        raise InvalidError([(f, "unknown field") for f in unknown])
    checked = {**obj, "metadata": {}}  # ObjectMeta is validated by the server, not by the CRD schema
    validator = jsonschema.Draft7Validator(to_json_schema(schema))
    errors = sorted(validator.iter_errors(checked), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidError([(".".join(str(p) for p in e.absolute_path) or "<root>", e.message) for e in errors])
    return obj


# -- printer columns ------------------------------------------------------------------------
_FILTER = re.compile(r'^\[\?\(@\.(?P<key>[\w.-]+)\s*==\s*["\']?(?P<value>[^"\')]*)["\']?\)\]')
_INDEX = re.compile(r"^\[(?P<index>\d+)\]")
_FIELD = re.compile(r"^\.(?P<name>[\w-]+)")


def jsonpath(obj: Any, path: str) -> Any:
    """The value at a CRD printer column's JSONPath, or None."""
    path = path.strip().removeprefix("{").removesuffix("}")
    value = obj
    while path and value is not None:
        if m := _FIELD.match(path):
            value = value.get(m["name"]) if isinstance(value, dict) else None
        elif m := _INDEX.match(path):
            index = int(m["index"])
            value = value[index] if isinstance(value, list) and index < len(value) else None
        elif m := _FILTER.match(path):
            matches = [i for i in value or [] if isinstance(i, dict) and str(i.get(m["key"])) == m["value"]]
            value = matches[0] if matches else None
        else:
            raise ValueError(f"unsupported JSONPath at {path!r}")
        path = path[m.end():]
    return value


def printer_cells(obj: dict[str, Any], columns: list[dict[str, Any]]) -> list[Any]:
    return [jsonpath(obj, c["jsonPath"]) for c in columns]
