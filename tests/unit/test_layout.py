"""The architecture, read from the source: layers, no import cycle, no module over 400 lines.

Nothing here imports the project: every module under sidecar/ and states/ is parsed with
``ast`` and its imports collected at any depth (a function-level import executes too, and
is as much a dependency as one at the top), relative imports resolved. The rules
(docs/architecture.md, issue 11):

- ``sidecar.core`` (the pure decisions) imports nothing of the shell or the tools and no
  library that does I/O or brings the clock or chance in; ``states`` (the machines' tables)
  imports nothing of ``sidecar``;
- ``sidecar.shell`` (the loop and the adapters) imports nothing of the tools or the CLI;
- no import cycle among the project's modules;
- no module over 400 lines;
- ``Core`` is a composition of components, not a stack of mixins.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sidecar", "states")
MAX_LINES = 400

# What the pure core must not import: the other layers, and anything that does I/O, reads
# the clock or draws chance (the core is fed `now` and effects carry the I/O out).
CORE_FORBIDDEN = (
    "sidecar.shell", "sidecar.tools", "sidecar.cli",
    # the adapters' libraries
    "pika", "minio", "requests", "urllib3", "tenacity", "prometheus_client", "openlineage",
    "boto3", "botocore",
    # the operating system, the network, threads and processes
    "os", "pathlib", "shutil", "tempfile", "io", "socket", "ssl", "select", "selectors",
    "threading", "multiprocessing", "concurrent", "asyncio", "subprocess", "signal",
    "logging", "urllib", "http",
    # the clock and chance: replay must give the same effects for the same events
    "time", "random", "secrets", "uuid",
)
SHELL_FORBIDDEN = ("sidecar.tools", "sidecar.cli")
STATES_FORBIDDEN = ("sidecar",)


@dataclass(frozen=True)
class Module:
    name: str  # dotted: sidecar.core.codec
    path: Path
    relpath: str  # from the project's root: sidecar/core/codec.py
    tree: ast.Module

    @property
    def package(self) -> str:
        """The package relative imports start from."""
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def load_modules(root: Path = ROOT) -> dict[str, Module]:
    modules = {}
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            relpath = path.relative_to(root)
            parts = list(relpath.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            modules[name] = Module(name, path, relpath.as_posix(),
                                   ast.parse(path.read_text(), str(path)))
    return modules


def imports(module: Module, known: set[str]) -> Iterator[str]:
    """Every module ``module`` imports, dotted and absolute, at any depth in its source.
    ``from pkg import name`` names the submodule pkg.name when there is one, and then not
    pkg itself: Python runs pkg/__init__.py first, but a package importing its own modules
    is how packages are built, not a cycle (one of them importing the package back is)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, node)
            if base == "__future__":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else base


def resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.package.split(".")
    if node.level - 1 >= len(package):
        raise ValueError(f"{module.relpath}:{node.lineno}: relative import beyond the top")
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """The project's import graph: module -> the project modules it imports."""
    known = set(modules)
    return {name: {target for target in imports(m, known) if target in known}
            for name, m in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (or a module that
    imports itself): Tarjan's algorithm, iterative so deep graphs do not hit the limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    found.append(frozenset(component))
    return found


def forbidden(modules: dict[str, Module], layer: str, banned: tuple[str, ...]) -> list[str]:
    """``file:line: import`` for every import of a ``banned`` module (or a submodule of one)
    by a module of ``layer`` (the package and everything under it)."""
    known = set(modules)
    found = []
    for name, module in modules.items():
        if name != layer and not name.startswith(layer + "."):
            continue
        for target in imports(module, known):
            if any(target == b or target.startswith(b + ".") for b in banned):
                found.append(f"{module.relpath}: imports {target}")
    return sorted(set(found))


def long_modules(modules: dict[str, Module]) -> dict[str, int]:
    lengths = {m.relpath: len(m.path.read_text().splitlines()) for m in modules.values()}
    return {path: n for path, n in lengths.items() if n > MAX_LINES}


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_modules()


def test_no_import_cycle(modules: dict[str, Module]) -> None:
    assert [sorted(c) for c in cycles(graph(modules))] == []


def test_no_module_over_400_lines(modules: dict[str, Module]) -> None:
    assert long_modules(modules) == {}


def test_the_core_is_composed_not_a_stack_of_mixins(modules: dict[str, Module]) -> None:
    """``Core`` has no base class: its parts are components it holds (sidecar/core/parts.py)."""
    [core] = [node for node in modules["sidecar.core"].tree.body
              if isinstance(node, ast.ClassDef) and node.name == "Core"]
    assert core.bases == []


def test_the_core_is_pure(modules: dict[str, Module]) -> None:
    assert forbidden(modules, "sidecar.core", CORE_FORBIDDEN) == []


def test_the_state_tables_know_nothing_of_the_sidecar(modules: dict[str, Module]) -> None:
    assert forbidden(modules, "states", STATES_FORBIDDEN) == []


def test_the_shell_does_not_import_the_tools(modules: dict[str, Module]) -> None:
    assert forbidden(modules, "sidecar.shell", SHELL_FORBIDDEN) == []


# --- the checks themselves, on a made-up project ------------------------------------------


def write(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for top in PACKAGES:
        (root / top).mkdir(exist_ok=True)
    return load_modules(root)


CYCLES = {
    "a function-level relative import closes a cycle": ({
        "sidecar/tools/a.py": "from .b import x\n",
        "sidecar/tools/b.py": "def f():\n    from . import a\n    return a\nx = 1\n",
        "sidecar/tools/c.py": "from sidecar.tools import b\n",  # imports b, is not in it
    }, {"sidecar.tools.a", "sidecar.tools.b"}),
    "a package's module importing the package back": ({
        "sidecar/tools/__init__.py": "from .rules import Rules\nclass Core(Rules): ...\n",
        "sidecar/tools/rules.py": "def f():\n    from ..tools import Core\n",
        "sidecar/tools/models.py": "from . import rules\n",  # the package's own import
    }, {"sidecar.tools", "sidecar.tools.rules"}),
}


@pytest.mark.parametrize(("files", "cycle"), CYCLES.values(), ids=list(CYCLES))
def test_a_cycle_is_found(tmp_path: Path, files: dict[str, str], cycle: set[str]) -> None:
    modules = write(tmp_path, {"sidecar/__init__.py": "", "sidecar/tools/__init__.py": "",
                               **files})
    assert cycles(graph(modules)) == [frozenset(cycle)]


def test_the_layer_rules_see_nested_and_relative_imports(tmp_path: Path) -> None:
    modules = write(tmp_path, {
        "sidecar/__init__.py": "",
        "sidecar/core/__init__.py": "",
        "sidecar/core/clock.py": "def now():\n    import time\n    return time.time()\n",
        "sidecar/core/fine.py": "import hashlib\nfrom states import INPUT\n",
        "sidecar/core/leak.py": "from ..shell.io import amqp\n",
        "sidecar/shell/__init__.py": "",
        "sidecar/shell/io/__init__.py": "",
        "sidecar/shell/io/amqp.py": "import pika\n",
        "sidecar/shell/x.py": "from ..tools.replay import run\n",
        "sidecar/tools/__init__.py": "",
        "sidecar/tools/replay.py": "run = 1\n",
        "states/__init__.py": "from sidecar.core import fine\n",
    })
    assert forbidden(modules, "sidecar.core", CORE_FORBIDDEN) == [
        "sidecar/core/clock.py: imports time",
        "sidecar/core/leak.py: imports sidecar.shell.io.amqp",
    ]
    assert forbidden(modules, "sidecar.shell", SHELL_FORBIDDEN) == [
        "sidecar/shell/x.py: imports sidecar.tools.replay"]
    assert forbidden(modules, "states", STATES_FORBIDDEN) == [
        "states/__init__.py: imports sidecar.core.fine"]


def test_a_long_module_is_found(tmp_path: Path) -> None:
    modules = write(tmp_path, {
        "sidecar/__init__.py": "",
        "sidecar/long.py": "x = 1\n" * (MAX_LINES + 1),
        "sidecar/short.py": "x = 1\n" * MAX_LINES,
    })
    assert long_modules(modules) == {"sidecar/long.py": MAX_LINES + 1}
