"""The packages' import rules, read from the source (every import statement, including those inside
functions and ``if TYPE_CHECKING:`` blocks): gateway_common imports nothing of ours, fake_gateway
imports only gateway_common (it stands on its own, without the harness), no cycle runs through
fake_gateway's or harness's modules, the oracle judges from gateway_common's facts alone, and
only entry points import the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway_common", "fake_gateway", "harness")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of ours that module ``name`` imports. ``from package import name`` counts as
    importing ``package.name`` when that is a module, else the package."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    modules = {_module_name(p) for p in files}
    return {
        _module_name(p): _imports(p.read_text(encoding="utf-8"), _module_name(p),
                                  p.name == "__init__.py", modules)
        for p in files
    }


def _cycles(graph: dict[str, set[str]], within: str) -> list[list[str]]:
    """Every import cycle among the modules of the package ``within`` (one path per cycle)."""
    nodes = {m for m in graph if m.split(".")[0] == within}
    found: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node] & nodes):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(nodes):
        if node not in state:
            visit(node, [node])
    return found


GRAPH = import_graph()


def test_the_graph_sees_imports_in_functions_and_type_checking_blocks():
    source = """
from typing import TYPE_CHECKING
from . import server
if TYPE_CHECKING:
    from fake_gateway.protocol import GatewayCore
def later():
    import harness.world
    from gateway_common.facts import CONTROLS
"""
    modules = {"fake_gateway.server", "fake_gateway.protocol", "harness.world",
               "gateway_common.facts"}
    assert _imports(source, "fake_gateway.rest", False, modules) == {
        "fake_gateway.server", "fake_gateway.protocol", "harness.world", "gateway_common.facts"}


@pytest.mark.parametrize("package,allowed", [
    ("gateway_common", {"gateway_common"}),
    ("fake_gateway", {"gateway_common", "fake_gateway"}),
])
def test_lower_packages_import_nothing_above_them(package: str, allowed: set[str]):
    wrong = sorted(f"{module} imports {imported}"
                   for module, imports in GRAPH.items() if module.split(".")[0] == package
                   for imported in imports if imported.split(".")[0] not in allowed)
    assert wrong == []


def test_no_import_cycle_inside_fake_gateway():
    # A package's __init__ importing its own modules is no cycle: it runs first either way.
    graph = {m: {i for i in imports if i != "fake_gateway"} for m, imports in GRAPH.items()}
    assert [" -> ".join(cycle) for cycle in _cycles(graph, "fake_gateway")] == []


def test_no_import_cycle_inside_harness():
    graph = {m: {i for i in imports if not m.startswith(i + ".")} for m, imports in GRAPH.items()}
    assert [" -> ".join(cycle) for cycle in _cycles(graph, "harness")] == []


def test_the_oracle_imports_only_itself_and_gateway_common():
    # A verdict must not depend on which client or world produced the trace (DESIGN.md 4).
    wrong = sorted(f"{module} imports {imported}" for module, imports in GRAPH.items()
                   if module.startswith("harness.oracle")
                   for imported in imports
                   if not imported.startswith(("harness.oracle", "gateway_common")))
    assert wrong == []


def _is_cli(module: str) -> bool:
    return module == "harness.cli" or module.startswith("harness.cli.")


def test_only_entry_points_import_the_cli():
    # harness.fleet keeps `python -m harness.fleet` working for one release (deprecated).
    entry_points = {"harness.__main__", "harness.fleet"}
    wrong = sorted(f"{module} imports {imported}" for module, imports in GRAPH.items()
                   if not _is_cli(module) and module not in entry_points
                   for imported in imports if _is_cli(imported))
    assert wrong == []


@pytest.mark.parametrize("package,allowed", [
    ("harness.faults", ("harness.faults",)),
    # The reference client runs in any process: no world, no oracle (testing.py is the test world).
    ("harness.client", ("harness.client", "gateway_common", "fake_gateway.urls")),
])
def test_fault_engine_and_reference_client_stand_alone(package: str, allowed: tuple[str, ...]):
    wrong = sorted(f"{module} imports {imported}" for module, imports in GRAPH.items()
                   if module.startswith(package) and module != "harness.client.testing"
                   for imported in imports if not imported.startswith(allowed))
    assert wrong == []
