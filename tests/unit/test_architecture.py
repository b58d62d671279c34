"""The house rules, checked: no import circles, and imports inside functions only where deferring them
is the point (the command line's start-up, lazy faces). What `import choreograph` loads is checked in a
fresh interpreter: tests/e2e/test_import_cost.py."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
from helpers import ROOT

SRC = ROOT / "src" / "choreograph"


def test_there_is_no_import_circle() -> None:
    # Imports under TYPE_CHECKING never run, so they make no circle at import time.
    graph = grimp.build_graph("choreograph", exclude_type_checking_imports=True)
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                circles.append(f"{module} -> {imported} -> ... -> {module}")
    # A package face importing its own private modules is no circle in practice (the face runs last).
    circles = [c for c in circles if not _face_and_its_module(c)]
    assert circles == []


def _face_and_its_module(circle: str) -> bool:
    first, second = circle.split(" -> ")[:2]
    return second.startswith(first + ".") or first.startswith(second + ".")


def _imports_inside_functions() -> list[tuple[Path, int, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found.append((path, node.lineno, fn.name if "deferred" not in lines[node.lineno - 1] else "#"))
    return found


def test_imports_inside_functions_are_deferred_on_purpose() -> None:
    """The command line defers its imports for start-up speed (documented in cli/_app.py), lazy
    package faces load on first use; anywhere else such an import says why with a comment."""
    unexplained = [f"{p.relative_to(SRC)}:{line} in {fn}()" for p, line, fn in _imports_inside_functions()
                   if p.parent.name != "cli" and fn not in ("__getattr__", "#")]
    assert unexplained == []
