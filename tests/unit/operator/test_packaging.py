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
