import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["tinyimg.router.app", "tinyimg.router.cli", "tinyimg.router.discovery_kube", "tinyimg.cli"])
def test_router_import_leaves_torch_and_diffusers_out(module):
    code = (
        f"import sys, {module}; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')); "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
