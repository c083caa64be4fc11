"""Shared inputs for the operator's unit tests: the example ImageModels and their specs."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = {p.stem: p for p in sorted((ROOT / "crds" / "examples").glob("*.yaml"))}


def load_example(name: str) -> dict:
    return yaml.safe_load(EXAMPLES[name].read_text())


@pytest.fixture(params=sorted(EXAMPLES))
def example(request) -> dict:
    return load_example(request.param)
