"""Run the real helm binary on the chart: find it, lint, render to a list of objects."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tinyimg"
VALUES_ALL = Path(__file__).with_name("values-all.yaml")
RELEASE = "demo"
NAMESPACE = "images"


def find_helm() -> str:
    """$HELM, else the pinned binary `make tools` puts in .tools/. Missing helm fails the test:
    CI runs `make test`, which fetches it first, so its absence is a broken setup, not a skip."""
    path = Path(os.environ.get("HELM") or ROOT / ".tools" / "helm" / "helm")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"helm not found at {path}: run `make tools` (or set $HELM)", pytrace=False)
    return str(path)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_helm(), *args], capture_output=True, text=True, timeout=120, check=False)


def values_args(values_files: tuple[Path, ...], sets: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    for f in values_files:
        args += ["--values", str(f)]
    for s in sets:
        args += ["--set", s]
    return args


def lint(values_files: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return run_helm("lint", "--strict", str(CHART), *values_args(values_files, sets))


def template(values_files: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return run_helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds",
        *values_args(values_files, sets),
    )


def render(values_files: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    result = template(values_files, sets)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = find(objects, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(workload name, container) for every container and init container the chart renders."""
    found = []
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            pod = o["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                found.append((f"{o['metadata']['name']}/{c['name']}", c))
    return found
