"""Runs tests/e2e/run.sh (kind + helm + the real images) where Docker and kind exist.

Skipped on the project's development machines and in `make test` there (no Docker). Also opt-in
with TINYIMG_E2E=1, because it builds images and a cluster (about 10-20 minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("docker", "kind", "kubectl", "helm", "curl")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        missing := [t for t in TOOLS if shutil.which(t) is None], reason=f"e2e needs {', '.join(missing)} on PATH"
    ),
    pytest.mark.skipif(os.environ.get("TINYIMG_E2E") != "1", reason="e2e builds images and a kind cluster: set TINYIMG_E2E=1"),
]


@pytest.mark.timeout(3600)
def test_helm_install_then_imagemodel_then_png_through_the_router(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ROOT / "tests" / "e2e" / "run.sh")], env={**os.environ, "OUT": str(tmp_path)}, check=False, timeout=3500
    )
    assert result.returncode == 0, f"run.sh failed; diagnostics in {tmp_path}"
    assert (tmp_path / "image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
