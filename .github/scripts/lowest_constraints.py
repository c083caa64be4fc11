"""Pin every dependency the two distributions declare to its declared floor (pip has no
`--resolution lowest-direct`; this is its constraints-file equivalent), for the CI job that proves
the floors are true.

    python .github/scripts/lowest_constraints.py OUT_DIR

writes OUT_DIR/constraints.txt (name==floor for each `name>=floor`, extras included) and
OUT_DIR/test-tools.txt (requirements-test.txt without the packages the product itself declares:
those come at their floors instead). A requirement without a floor fails the script: every
dependency must say what it was tested down to.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECTS = (ROOT / "server" / "pyproject.toml", ROOT / "operator" / "pyproject.toml")
OWN = {"tinyimg-server", "tinyimg-operator"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project.get("dependencies", []), *(r for extra in project.get("optional-dependencies", {}).values() for r in extra)]


def floors(requirements: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for requirement in requirements:
        name, _extras, spec = REQUIREMENT.match(requirement.split(";")[0]).groups()
        if normalise(name) in OWN:
            continue
        floor = re.search(r">=\s*([0-9][^,\s]*)", spec)
        if floor is None:
            raise SystemExit(f"{requirement!r} declares no floor (>=)")
        key = normalise(name)
        if key in pins and pins[key] != floor.group(1):
            raise SystemExit(f"{name}: two different floors, {pins[key]} and {floor.group(1)}")
        pins[key] = floor.group(1)
    return pins


def main(out: Path) -> None:
    pins = floors([r for p in PYPROJECTS for r in declared(p)])
    out.mkdir(parents=True, exist_ok=True)
    (out / "constraints.txt").write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    tools = []
    for line in (ROOT / "requirements-test.txt").read_text().splitlines():
        match = REQUIREMENT.match(line)
        if line.strip() and not line.lstrip().startswith("#") and match and normalise(match.group(1)) not in pins:
            tools.append(line.strip())
    (out / "test-tools.txt").write_text("".join(f"{t}\n" for t in tools))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
