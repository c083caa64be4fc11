"""The README is the front door: short, the commands it shows are the ones CI runs, the files and
configs it points to exist and parse, and it links into the docs site (tests/unit/test_docs.py
checks the pages themselves)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tinyimg.spec import load_config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def indented_commands(section: str) -> list[str]:
    """The indented (4-space) command lines of one README section."""
    body = README.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in body.splitlines() if line.startswith("    ") and line.strip()]


def test_quick_start_is_two_commands_run_and_test():
    commands = indented_commands("Quick start")
    assert commands[0] == "make run"
    assert commands[-1] == "make test"


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test"


REPO_PATH = re.compile(r"`((?:server|operator|crds|charts|tests|bench|\.ci)/[\w./-]+|config\.yaml|Dockerfile\.\w+)`")


@pytest.mark.parametrize("path", sorted(set(REPO_PATH.findall(README))))
def test_paths_the_readme_names_exist(path):
    assert (ROOT / path).exists(), f"README names {path}, which does not exist"


@pytest.mark.parametrize("config", ["config.yaml", "server/demo/config.yaml"])
def test_configs_the_readme_points_to_parse(config):
    assert f"`{config}`" in README or f"({config})" in README
    assert load_config(ROOT / config).models


def test_the_readme_is_short_and_links_into_the_docs():
    assert len(README.splitlines()) <= 150
    linked = set(re.findall(r"\]\((docs/[\w./-]+\.md)\)", README))
    assert {"docs/getting-started/one-machine.md", "docs/getting-started/cluster.md", "docs/reference/errors.md"} <= linked
    assert [page for page in linked if not (ROOT / page).is_file()] == []
