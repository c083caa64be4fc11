"""Dockerfile.operator: non-root, no model runtime, namespaced by default (hadolint: tests/chart)."""

import re

from .conftest import ROOT


def test_dockerfile_operator_runs_as_non_root_without_torch():
    text = (ROOT / "Dockerfile.operator").read_text()
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "USER 10001" in instructions
    assert "./operator" in instructions
    # The server core (optionally its torch-free http extra, for the router), never the model runtime.
    assert "diffusers" not in instructions and "torch" not in instructions


def test_dockerfile_operator_is_namespaced_by_default_like_the_chart():
    """No CMD: `tinyimg-operator run` alone watches $TINYIMG_NAMESPACE; cluster-wide is opt-in."""
    text = (ROOT / "Dockerfile.operator").read_text()
    assert re.findall(r"^ENTRYPOINT .*$", text, flags=re.MULTILINE) == ['ENTRYPOINT ["tinyimg-operator", "run"]']
    assert not re.search(r"^CMD ", text, flags=re.MULTILINE)
