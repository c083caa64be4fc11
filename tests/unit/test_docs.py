"""The documentation site (docs/, built by `make docs`): its generated references match the code,
every field, value, metric, error code and flag carries a description, the files and configs its
pages name exist and parse, and the built site loads nothing from elsewhere."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinyimg.core.errors import ERROR_CODES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def load_generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = load_generator()
GENERATED = GENERATE.build_pages()


@pytest.mark.parametrize("name", sorted(GENERATE.PAGES))
def test_the_generated_reference_pages_match_the_code(name):
    assert (DOCS / "reference" / name).read_text() == GENERATED[name], "run `make generate`"


def test_every_imagemodel_field_has_a_description():
    undescribed = [path for path, node in GENERATE.walk_schema(GENERATE.crd_spec_schema()) if not node.get("description")]
    assert undescribed == []


def test_every_chart_value_has_a_description():
    rows = GENERATE.values_rows()
    assert len(rows) > 100
    assert [path for path, _node, description, _default in rows if not description] == []


def test_every_metric_has_help_text_and_both_services_export_some():
    families = GENERATE.metric_families()
    assert {service for service, *_ in families} == {"model server", "router"}
    assert [name for _service, name, _kind, _labels, doc in families if not doc.strip()] == []


# An error code in the product's source: a status then a snake_case code, as every ApiError, a
# route's refusal and a raw edge answer are written (families/ and tiny.py hold model configs).
CODE_IN_SOURCE = re.compile(r"\b[1-5]\d\d, \"([a-z]+(?:_[a-z]+)+|[a-z]{4,})\"")


def codes_in_source() -> set[str]:
    found = set()
    for path in (ROOT / "server" / "tinyimg").rglob("*.py"):
        if "families" in path.parts or path.name in ("tiny.py", "make_tiny.py"):
            continue
        found |= set(CODE_IN_SOURCE.findall(path.read_text()))
    return found - {"code", "status", "headers", "type"}  # keys of a dict literal, not codes


def test_every_error_code_the_code_answers_is_documented():
    used = codes_in_source() | {"server_busy", "generation_failed", "out_of_memory", "not_found", "method_not_allowed"}
    assert len(used) > 30
    assert sorted(used - set(ERROR_CODES)) == []
    assert [code for code, entry in ERROR_CODES.items() if not entry.description] == []


def parsers():
    from tinyimg.cli import build_parser
    from tinyimg.router.cli import build_parser as build_router_parser
    from tinyimg_operator.cli import build_parser as build_operator_parser

    for parser in (build_parser(), build_router_parser(), build_operator_parser()):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from (sub for sub in action.choices.values() if sub.add_help)


def test_every_command_line_flag_has_help():
    undocumented = [(p.prog, a.dest) for p in parsers() for a in p._actions
                    if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and not a.help]
    assert undocumented == []


REPO_PATH = re.compile(r"`((?:server|operator|crds|charts|tests|bench|docs|\.ci)/[\w./-]+|config\.yaml|Dockerfile\.\w+|BENCHMARKS\.md)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_files_a_page_names_exist_and_its_yaml_parses(page):
    text = page.read_text()
    for path in REPO_PATH.findall(text):
        assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        assert isinstance(yaml.safe_load(block), dict | list)


def test_the_site_builds_strict_and_loads_nothing_from_elsewhere(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
                   cwd=ROOT, check=True, capture_output=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    pages = list(site.rglob("*.html"))
    assert len(pages) >= len(PAGES) - 1
    external = re.compile(r"<(?:script|link|img)[^>]+(?:src|href)=\"(?:https?:)?//", re.I)
    offenders = [p.name for p in pages if external.search(p.read_text())]
    assert offenders == []


def curl_bodies() -> list[tuple[str, str, str]]:
    """(page, path, JSON body) of every ``curl ... /generate|/v1/jobs ... -d '{...}'`` the pages show
    (continuation lines joined; bodies built by the shell, ``$(...)``, are left to the guides)."""
    found = []
    for page in PAGES:
        text = re.sub(r"\\\n\s*", " ", page.read_text())
        for line in text.splitlines():
            match = re.search(r"curl .*?(/generate|/v1/jobs)\b.*?-d '(\{.*?\})'", line)
            if match and "$(" not in match.group(2):
                found.append((page.name, match.group(1), match.group(2)))
    return found


def test_the_request_bodies_the_docs_show_are_valid_requests():
    from tinyimg.wire.requests import GenerateRequest, JobRequest

    bodies = curl_bodies()
    assert {path for _, path, _ in bodies} == {"/generate", "/v1/jobs"}
    for page, path, body in bodies:
        shape = JobRequest if path == "/v1/jobs" else GenerateRequest
        assert shape.model_validate_json(body).prompt, page  # raises, naming the field, when a body drifted
