"""The import graph points one way: the runtime never imports the simulator, dashboards, demo or top,
the HTTP plumbing (proxy/) and the API adapters (apis/) meet only through observe.py and records.py,
neither proxy/ nor observe.py names an API, and no module of the package imports itself round a circle."""

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


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports (type-checking imports too:
    a circle there is a circle in the design). `from llmobs.x import y` is an edge to the module
    llmobs.x.y when there is one, else to llmobs.x."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in paths:
                for alias in node.names:
                    edges.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in paths else node.module)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in paths)
        graph[name] = edges - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                found.append(sorted([node, *group]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_round_a_circle() -> None:
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:  # guards the check above against a scan that finds none
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert len(import_graph()) > 50


TRANSPORT = sorted([*(PACKAGE / "proxy").rglob("*.py"), PACKAGE / "observe.py"])


@pytest.mark.parametrize("path", TRANSPORT, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_transport_and_the_observer_name_no_api(path: Path) -> None:
    from llmobs.apis.table import ENDPOINTS

    endpoints = {spec.name for spec in ENDPOINTS.values()} | {"realtime"}
    strings = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
    assert not {m for m in imports(path) if m.startswith("llmobs.apis")}
    assert not strings & endpoints, f"{path.relative_to(PACKAGE)} names {sorted(strings & endpoints)}"


def test_the_layout_test_sees_the_rooms() -> None:  # guards the scan itself against an empty match
    rooms = {room(p) for p in RUNTIME}
    assert {"proxy", "apis", "telemetry", "app.py", "observe.py"} <= rooms
    assert imports(PACKAGE / "app.py") & {"llmobs.proxy.proxy", "llmobs.apis.table"}
