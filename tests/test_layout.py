"""The import graph points one way: the runtime never imports the simulator, dashboards, demo or top,
and the HTTP plumbing (proxy/) and the API adapters (apis/) meet only through observe.py and records.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "llmobs"
# Not the runtime: each may import the runtime, never the other way round.
OUTSIDE = ("sim", "dashboards", "dev", "top")
# Command-line entry points reach every room, lazily, by design.
ENTRY_POINTS = {"cli.py"}


def imports(path: Path) -> set[str]:
    """Every llmobs module `path` imports (absolute imports; the package uses no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmobs"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("llmobs"))
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
    return found


def room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.name


RUNTIME = sorted(p for p in PACKAGE.rglob("*.py") if room(p) not in OUTSIDE and room(p) not in ENTRY_POINTS)


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_runtime_imports_nothing_outside_it(path: Path) -> None:
    bad = {m for m in imports(path) if m.split(".")[1:2] and m.split(".")[1] in OUTSIDE}
    assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


@pytest.mark.parametrize(("mine", "theirs"), [("proxy", "apis"), ("apis", "proxy")])
def test_proxy_and_apis_know_nothing_of_each_other(mine: str, theirs: str) -> None:
    for path in (PACKAGE / mine).rglob("*.py"):
        bad = {m for m in imports(path) if m.startswith(f"llmobs.{theirs}")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_layout_test_sees_the_rooms() -> None:  # guards the scan itself against an empty match
    rooms = {room(p) for p in RUNTIME}
    assert {"proxy", "apis", "telemetry", "app.py", "observe.py"} <= rooms
    assert imports(PACKAGE / "app.py") & {"llmobs.proxy.proxy", "llmobs.apis.table"}
