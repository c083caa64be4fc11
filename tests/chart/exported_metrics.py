"""Which metric series the Python code exports, read from its source (no hand-kept list).

Finds every prometheus_client metric (Counter, Gauge, Histogram, ...) and custom-collector
metric family (GaugeMetricFamily, ...) created with a literal name, and expands each into the
series names Prometheus sees (``_total``, ``_bucket``, ``_sum``, ``_count``, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

# Constructor name → suffixes of the series it exposes ("" = the name itself).
SERIES_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "CounterMetricFamily": ("_total", "_created"),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count", "_created"),
    "GaugeHistogramMetricFamily": ("_bucket", "_gsum", "_gcount"),
    "Summary": ("", "_sum", "_count", "_created"),
    "SummaryMetricFamily": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
    "InfoMetricFamily": ("_info",),
    "Enum": ("",),
    "StateSetMetricFamily": ("",),
}


class UnresolvedMetricName(Exception):
    """A metric whose name is not a literal: the scan would silently miss it, so it refuses."""


def _prometheus_names(tree: ast.Module) -> tuple[dict[str, str], set[str]]:
    """Local names bound to prometheus_client constructors, and local names of the module itself
    (so ``collections.Counter`` and friends are not taken for metrics)."""
    constructors, modules = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus_client"):
            for alias in node.names:
                if alias.name in SERIES_SUFFIXES:
                    constructors[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.startswith("prometheus_client")}
    return constructors, modules


def _constructor(node: ast.Call, constructors: dict[str, str], modules: set[str]) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return constructors.get(func.id)
    if isinstance(func, ast.Attribute) and func.attr in SERIES_SUFFIXES and ast.unparse(func.value) in modules:
        return func.attr
    return None


def _string(node: ast.expr | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _module_constants(tree: ast.Module) -> dict[str, str]:
    found = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = stmt.value.value
    return found


def read_metric_families(source: str, where: str) -> dict[str, str]:
    """{full metric name: constructor} for every metric created in one module's source."""
    tree = ast.parse(source, where)
    constants = _module_constants(tree)
    constructors, modules = _prometheus_names(tree)
    families = {}
    for node in ast.walk(tree):
        constructor = _constructor(node, constructors, modules) if isinstance(node, ast.Call) else None
        if constructor is None:
            continue
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        name_node = node.args[0] if node.args else keywords.get("name")
        name = _string(name_node, constants)
        if name is None:
            raise UnresolvedMetricName(f"{where}:{node.lineno}: metric name is not a string literal")
        prefix = [_string(keywords.get(k), constants) for k in ("namespace", "subsystem")]
        families["_".join(p for p in (*prefix, name) if p)] = constructor
    return families


def series_names(name: str, constructor: str) -> set[str]:
    base = name.removesuffix("_total") if constructor.startswith("Counter") else name
    return {base + suffix for suffix in SERIES_SUFFIXES[constructor]}


def read_exported_series(root: Path) -> set[str]:
    series: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        for name, constructor in read_metric_families(path.read_text(), str(path)).items():
            series |= series_names(name, constructor)
    return series
