"""No import circles in care/ or analysis/.

Reads every module with `ast` (imports at module level and inside functions alike: a lazy import
hides a circle, it does not break it) and fails naming each circle found.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("care", "analysis")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports; `from a import b` counts as `a.b` where that is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import care.models.tiny` -> care.models.tiny
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> nx.DiGraph:
    paths = [path for package in PACKAGES for path in (REPO / package).rglob("*.py")]
    modules = {module_name(path) for path in paths}
    graph = nx.DiGraph()
    for path in paths:
        for target in imported_modules(path, modules):
            graph.add_edge(module_name(path), target)
    return graph


def test_the_scan_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert graph.has_edge("care.models.loading", "care.models.tiny")  # imported inside resolve_backbone
    assert graph.has_edge("care.objective", "care.objective.advantages")  # `from .advantages import`


def test_no_import_circles_in_care_or_analysis():
    circles = sorted(" -> ".join([*cycle, cycle[0]]) for cycle in nx.simple_cycles(import_graph()))
    assert not circles, "import circles:\n" + "\n".join(circles)
