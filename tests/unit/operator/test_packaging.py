"""Installing and importing the operator never pulls torch or diffusers."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["tinyimg_operator", "tinyimg_operator.handlers", "tinyimg_operator.cli"])
def test_import_leaves_torch_and_diffusers_out(module):
    code = (
        f"import sys, {module}, tinyimg_operator.reconcile, tinyimg_operator.crd\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_operator_distribution_depends_on_the_server_core_only():
    from importlib.metadata import requires

    reqs = requires("tinyimg-operator") or []
    assert any(r.startswith("tinyimg-server") and "[" not in r.split(";")[0] for r in reqs)
    assert not any(r.split()[0].lower().startswith(("torch", "diffusers")) for r in reqs)


def load_lowest_constraints():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / ".github" / "scripts" / "lowest_constraints.py"
    spec = importlib.util.spec_from_file_location("lowest_constraints", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lowest_versions_job_pins_every_declared_floor(tmp_path):
    """What CI's lowest-versions job installs: each product dependency at its floor, test tools apart."""
    lowest = load_lowest_constraints()
    lowest.main(tmp_path)
    pins = dict(line.split("==") for line in (tmp_path / "constraints.txt").read_text().splitlines())
    declared = {lowest.normalise(lowest.REQUIREMENT.match(r).group(1)) for p in lowest.PYPROJECTS for r in lowest.declared(p)}
    assert set(pins) == declared - lowest.OWN
    tools = {lowest.normalise(lowest.REQUIREMENT.match(t).group(1)) for t in (tmp_path / "test-tools.txt").read_text().splitlines()}
    assert "pytest" in tools and "kmock" in tools and not tools & set(pins)


def test_kubernetes_floor_has_what_the_kubeconfig_reader_calls():
    """tinyimg.kube.connection (the router's and the operator's reader) calls the client's
    kubeconfig loader with a configuration object of its own and lists the contexts."""
    import inspect

    import kubernetes.config

    lowest = load_lowest_constraints()
    floors = lowest.floors([r for p in lowest.PYPROJECTS for r in lowest.declared(p)])
    assert int(floors["kubernetes"].split(".")[0]) >= 37
    assert "client_configuration" in inspect.signature(kubernetes.config.load_kube_config).parameters
    assert callable(kubernetes.config.list_kube_config_contexts)


def test_a_dependency_without_a_floor_is_refused():
    lowest = load_lowest_constraints()
    with pytest.raises(SystemExit, match="no floor"):
        lowest.floors(["requests"])
