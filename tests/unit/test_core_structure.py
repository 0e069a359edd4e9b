"""The core's shape (issue 11): a composition, not a stack of mixins; no import cycle among
its modules, function-level imports included; no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from sidecar.core import Core

CORE = Path(__file__).resolve().parents[2] / "sidecar" / "core"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The sibling modules ``path`` imports, at any depth (``from . import x`` names the
    module ``x`` when it is one, else the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            base = node.module or ""
            for alias in node.names:
                found.add(alias.name if not base and alias.name in modules else base)
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("sidecar.core"):
            found.add(node.module.removeprefix("sidecar.core").lstrip(".") or "")
    return {m.split(".")[0] for m in found}


def test_no_import_cycle_in_the_core() -> None:
    modules = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    graph = {m: imports_of(CORE / f"{m}.py", modules) for m in modules}
    graph[""] = imports_of(CORE / "__init__.py", modules)  # the package itself
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
    assert "" not in set().union(*(graph[m] for m in modules)), "a module imports the package"


def test_the_core_is_composed_not_a_stack_of_mixins() -> None:
    assert Core.__mro__ == (Core, object)


def test_no_core_module_over_400_lines() -> None:
    assert {p.name: n for p in CORE.glob("*.py")
            if (n := len(p.read_text().splitlines())) > 400} == {}
