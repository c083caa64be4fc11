"""Renders shared by the chart tests: helm runs once per values set, not once per test."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import VALUES_ALL, render

# Each id is a values set the chart must render into valid objects.
VALUE_SETS: dict[str, tuple[tuple, tuple]] = {
    "defaults": ((), ()),
    "every-option": ((VALUES_ALL,), ()),
    "cluster-wide-operator": ((), ("operator.watchAllNamespaces=true",)),
    "router-only": ((), ("operator.enabled=false",)),
}


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(*args) for name, args in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def defaults(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["defaults"]


@pytest.fixture(scope="session")
def every_option(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["every-option"]
