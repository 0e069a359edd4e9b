"""The checkouts whose sidecars ``python -m bench whole`` runs: this one, and with
``--compare DIR`` another (e.g. ``git worktree add`` of an older commit) with its own
``.venv``. A tree's sidecar is started as ``DIR/.venv/bin/python -m sidecar`` with DIR first
on PYTHONPATH, and ``check`` makes sure that this really imports DIR's code."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .endpoints import REPO

PACKAGES = ("sidecar", "states")  # the sidecar's code (bench/ and tests/ are not run by it)


@dataclass(frozen=True)
class Tree:
    name: str  # "A" (this checkout) or "B" (--compare DIR)
    root: Path
    python: str  # the interpreter of the tree's venv (a symlink: not resolved)

    def environ(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` (from scenario.base_env) with this tree instead of bench's on PYTHONPATH."""
        path = [str(self.root), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                  if p]]
        return {**env, "PYTHONPATH": os.pathsep.join(path)}


THIS = Tree("A", REPO, sys.executable)


def other(directory: Path) -> Tree:
    root = directory.absolute()
    python = root / ".venv" / "bin" / "python"
    if not (root / "sidecar").is_dir() or not python.exists():
        raise SystemExit(f"--compare {directory}: not a checkout with its own .venv (make one: "
                         f"cd {root} && python3 -m venv .venv && .venv/bin/pip install -e .)")
    return Tree("B", root, str(python))


def compile_sources(tree: Tree = THIS) -> None:
    """Write the tree's ``.pyc`` files, as the image's ``pip install`` does: a dev tree
    installed editable, with PYTHONDONTWRITEBYTECODE set, would compile every module at
    every start (about a quarter of the start-up's instructions) and overstate what users
    pay. The tree's own interpreter writes them (its version's cache tag)."""
    dirs = [str(tree.root / p) for p in PACKAGES if (tree.root / p).is_dir()]
    subprocess.run([tree.python, "-m", "compileall", "-q", *dirs], check=True,
                   stdout=subprocess.DEVNULL)


def check(tree: Tree, env: dict[str, str]) -> dict[str, Any]:
    """The tree's commit, whether it has uncommitted changes (anywhere; in the sidecar's
    code), and the ``sidecar`` package its interpreter imports with the environment the
    sidecar gets, from a scratch directory as the sidecar's: it must be the tree's own."""
    with tempfile.TemporaryDirectory() as scratch:
        imported = subprocess.run(
            [tree.python, "-c", "import sidecar; print(sidecar.__file__)"],
            env=tree.environ(env), cwd=scratch, capture_output=True, text=True, check=True
        ).stdout.strip()
    if not Path(imported).resolve().is_relative_to(tree.root.resolve()):
        raise SystemExit(f"{tree.root}: its python imports {imported}, not the tree's sidecar")
    return {"name": tree.name, "root": str(tree.root), "python": tree.python,
            "sidecar_imported": imported, "commit": _git(tree, "rev-parse", "HEAD"),
            "uncommitted": bool(_git(tree, "status", "--porcelain", "--untracked-files=no")),
            "sidecar_modified": bool(_git(tree, "status", "--porcelain", "--", *PACKAGES))}


def _git(tree: Tree, *argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=tree.root, capture_output=True, text=True,
                          check=True).stdout.strip()
