"""The house's structure (issue: router and model server as sibling apps over one core), checked
on the code itself. The import rules proper (no circles, layers, who may import whom) are
`.importlinter`'s, run by `make lint`; these are the measures it cannot state."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from tinyimg.router.balancer import Balancer
from tinyimg.router.discovery import Discovery
from tinyimg.runtime.jobqueue import GatherPolicy
from tinyimg.runtime.jobrunner import JobsApi
from tinyimg.runtime.jobs import EngineApi

PACKAGE = Path(__file__).resolve().parents[2] / "server" / "tinyimg"
SERVER_ONLY = ("tinyimg.api", "tinyimg.runtime", "tinyimg.families", "tinyimg.tiny", "tinyimg.imaging")
# 49 before durable jobs; +4 for tinyimg.durable (the stored-jobs reader the router answers shared
# jobs with, its documents and its result store), whose Redis client loads only with --redis-url;
# +4 for tenants (core.tenants, core.quota, router.tenancy, router.routes.usage); +3 for tracing
# (core.tracing, http.tracing, http.metrics: the OpenMetrics negotiation both apps share).
MAX_ROUTER_MODULES = 60


def test_the_router_app_loads_a_small_closure_and_nothing_of_the_model_server():
    code = "import sys, json, tinyimg.router.app; print(json.dumps(sorted(m for m in sys.modules if m.startswith('tinyimg'))))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert [m for m in loaded if m.startswith(SERVER_ONLY)] == []
    assert len(loaded) <= MAX_ROUTER_MODULES, loaded


def route_modules() -> dict[str, ast.Module]:
    """The modules of ``tinyimg.api`` that define routes (an ``APIRouter``)."""
    trees = {p.stem: ast.parse(p.read_text()) for p in (PACKAGE / "api").glob("*.py")}
    return {name: tree for name, tree in trees.items()
            if any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "APIRouter" for n in ast.walk(tree))}


def test_route_modules_import_no_sibling_route_module():
    routes = route_modules()
    assert {"generate", "jobs", "edits", "openai_images", "info", "health", "metrics"} <= set(routes)
    crossing = []
    for name, tree in routes.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                crossing += [(name, m) for m in imported if m.startswith("tinyimg.api.")
                             and m.removeprefix("tinyimg.api.") in routes and m != f"tinyimg.api.{name}"]
    assert crossing == []


def contains_any(annotation: object) -> bool:
    if annotation is typing.Any:
        return True
    return any(contains_any(arg) for arg in typing.get_args(annotation))


@pytest.mark.parametrize("seam", [EngineApi, JobsApi, Discovery, Balancer, GatherPolicy])
def test_the_seams_have_no_any_in_their_signatures(seam):
    methods = [m for name, m in inspect.getmembers(seam) if not name.startswith("_") and callable(m)]
    assert methods, seam
    for method in methods:
        hints = typing.get_type_hints(method, vars(sys.modules[seam.__module__]))
        assert not [k for k, v in hints.items() if contains_any(v)], f"{seam.__name__}.{method.__name__}: {hints}"
