"""Tiny pipelines on disk for every family, built once per test session.

The families are the product's (``tinyimg.families.FAMILIES``) plus the fixture families of the
tests: every ``tests/support/family_*.py`` (a ``KEY`` and a ``FAMILY``), found by name, so adding
one needs no other file. A fixture family is in the registry only inside ``registered_families``
(the ``fixture_families`` fixture), so the product's schema and CRD never see it.

``tiny_model_dirs`` (the product's families; ``all_tiny_model_dirs``: with the fixture families)
reuses ``.demo/tiny-*`` when ``make run`` already built them, else builds each into a session temp
dir (a few seconds). ``tiny_config`` makes a CPU ServerConfig serving the
product's families (or those named) at 64x64, 4 steps.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tinyimg.families import FAMILIES as REGISTRY
from tinyimg.families.family import Family
from tinyimg.spec import ServerConfig, parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]
FAMILIES = tuple(REGISTRY)  # the product's


def load_fixture_families() -> dict[str, Family]:
    found = {}
    for path in sorted(Path(__file__).parent.glob("family_*.py")):
        module = importlib.import_module(f"tests.support.{path.stem}")
        found[module.KEY] = module.FAMILY
    return found


FIXTURE_FAMILIES = load_fixture_families()
ALL_FAMILIES = FAMILIES + tuple(FIXTURE_FAMILIES)  # what the family contract suite runs over


@contextlib.contextmanager
def registered_families(extra: dict[str, Family]) -> Iterator[None]:
    """``extra`` in the registry for the block (what the one registry line does for a product family)."""
    REGISTRY.update(extra)
    try:
        yield
    finally:
        for key in extra:
            REGISTRY.pop(key, None)


@pytest.fixture(scope="module")
def fixture_families() -> Iterator[dict[str, Family]]:
    with registered_families(FIXTURE_FAMILIES):
        yield FIXTURE_FAMILIES


def declared_family(key: str) -> Family:
    return REGISTRY[key] if key in REGISTRY else FIXTURE_FAMILIES[key]


def build_tiny_dirs(families: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {}
    for family in families:
        demo = REPO_ROOT / ".demo" / f"tiny-{family}"
        if (demo / "model_index.json").is_file():
            dirs[family] = demo
        else:
            dirs[family] = tmp_path_factory.mktemp("tiny-models") / f"tiny-{family}"
            declared_family(family).build_tiny().save_pretrained(dirs[family])
    return dirs


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The product's families."""
    return build_tiny_dirs(FAMILIES, tmp_path_factory)


@pytest.fixture(scope="session")
def all_tiny_model_dirs(tiny_model_dirs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The product's families and the fixture families: what the family contract suite uses."""
    return tiny_model_dirs | build_tiny_dirs(tuple(FIXTURE_FAMILIES), tmp_path_factory)


def tiny_model_entry(family: str, source: Path) -> dict[str, Any]:
    return {
        "name": f"tiny-{family}",
        "family": family,
        "source": str(source),
        "dtype": "float32",
        "defaults": {"steps": 4, "width": 64, "height": 64},
        "limits": {"maxWidth": 256, "maxHeight": 256, "maxSteps": 20, "maxImages": 4},
        # Uncompiled: the CPU's default (full torch.compile) would add its compile to every server a
        # test starts; the acceleration tests ask for each tier themselves.
        "runtime": {"device": "cpu", "cpuFallback": True, "maxBatchSize": 4, "maxBatchWaitMs": 20, "queueSize": 16,
                    "acceleration": {"compile": "none"}},
        "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
    }


def tiny_config(
    dirs: dict[str, Path], families: tuple[str, ...] = FAMILIES, **overrides: Any
) -> ServerConfig:
    """The product's tiny models (or ``families``) on CPU. ``overrides`` are wire-named model fields
    applied to every model; dict values merge into the defaults, e.g. ``runtime={"maxBatchSize": 1}``.
    A fixture family must be registered (``fixture_families``) for its config to be valid."""
    models = []
    for family in families:
        entry = tiny_model_entry(family, dirs[family])
        for key, value in overrides.items():
            entry[key] = {**entry[key], **value} if isinstance(value, dict) and key in entry else value
        models.append(entry)
    return parse_config({"models": models}, "<tiny_config>")
