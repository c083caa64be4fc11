"""Kubernetes label- and field-selector semantics, as the API server applies them to lists and watches."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class SelectorError(ValueError):
    """A selector the API server would refuse (400)."""


_LABEL_TERM = re.compile(
    r"^\s*(?:(?P<neg>!)?(?P<key>[^!=\s,()]+)\s*(?:(?P<op>==|!=|=)\s*(?P<val>[^,\s]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?\s*)$"
)
_FIELD_TERM = re.compile(r"^\s*([^!=]+?)\s*(==|!=|=)\s*(.*?)\s*$")


def split_selector(selector: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b`` is two terms)."""
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
    """Equality- and set-based terms: ``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``."""
    for term in split_selector(selector or ""):
        m = _LABEL_TERM.match(term)
        if not m:
            raise SelectorError(f"bad label selector term {term!r}")
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


def label_selector_string(selector: Mapping[str, Any]) -> str:
    """A LabelSelector object (``matchLabels``, ``matchExpressions``) as a selector string."""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin"}.get(expr["operator"])
        terms.append(f"{expr['key']} {op} ({','.join(expr['values'])})" if op else
                     (expr["key"] if expr["operator"] == "Exists" else f"!{expr['key']}"))
    return ",".join(terms)


def field_value(obj: Mapping[str, Any], path: str) -> Any:
    """A dotted path into an object (``metadata.name``, ``status.phase``, ``spec.nodeName``)."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def match_field_selector(obj: Mapping[str, Any], selector: str | None) -> bool:
    """``path=value`` / ``path!=value`` terms on any dotted field (the API server allows a few per kind)."""
    for term in split_selector(selector or ""):
        m = _FIELD_TERM.match(term)
        if not m:
            raise SelectorError(f"bad field selector term {term!r}")
        key, op, value = m.groups()
        actual = field_value(obj, key)
        actual = "" if actual is None else str(actual)
        if (actual == value) != (op in ("=", "==")):
            return False
    return True
