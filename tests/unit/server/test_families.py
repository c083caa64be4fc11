"""The family registry and the docs' recipe for adding a family agree with ``Family``."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from tinyimg.families import FAMILIES
from tinyimg.families.family import Family

RECIPE = (Path(__file__).resolve().parents[3] / "docs" / "development" / "families.md").read_text()


def test_the_registry_is_a_plain_dict_of_declarations():
    assert type(FAMILIES) is dict and list(FAMILIES) == ["sdxl", "flux"]
    assert all(isinstance(family, Family) for family in FAMILIES.values())


def test_the_docs_example_declares_every_family_field_by_keyword():
    example = RECIPE.split("FAMILY = Family(", 1)[1].split("\n)", 1)[0]
    keywords = re.findall(r"\b(\w+)=", example)
    assert keywords == [field.name for field in dataclasses.fields(Family)]
