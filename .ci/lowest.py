"""Print the lowest versions pyproject.toml allows, as pip constraints: `name==lower` for each
direct dependency (runtime and every extra), markers kept. CI installs the suite with them
(`pip install -e ".[test]" -c <(python .ci/lowest.py)`), so each declared lower bound is one
that has run; a requirement without a lower bound is an error, since it promises every release."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)(?P<marker>;.*)?$")
_LOWER = re.compile(r"(?:>=|==)\s*(?P<version>[^,\s]+)")


def lowest(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    lines = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement.strip())
        if match is None:
            raise SystemExit(f"cannot read the requirement {requirement!r}")
        if match["name"] == project["name"]:
            continue  # an extra naming another extra
        lower = _LOWER.search(match["spec"])
        if lower is None:
            raise SystemExit(f"{requirement!r} has no lower bound (>= or ==): CI cannot run the lowest it allows")
        lines.append(f"{match['name']}=={lower['version']}{match['marker'] or ''}")
    return lines


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "pyproject.toml"
    print("\n".join(lowest(path)))
