"""The family registry and the README's recipe for adding a family agree with ``Family``."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from tinyimg.families import FAMILIES
from tinyimg.families.family import Family

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_the_registry_is_a_plain_dict_of_declarations():
    assert type(FAMILIES) is dict and list(FAMILIES) == ["sdxl", "flux"]
    assert all(isinstance(family, Family) for family in FAMILIES.values())


def test_the_readme_example_declares_every_family_field_by_keyword():
    section = README.split("## Adding a model family", 1)[1].split("\n## ", 1)[0]
    example = section.split("FAMILY = Family(", 1)[1].split("\n)", 1)[0]
    keywords = re.findall(r"\b(\w+)=", example)
    assert keywords == [field.name for field in dataclasses.fields(Family)]
