"""Packages whose ``__init__`` loads what the sidecar never uses, deferred until something
asks the package for a name (issue 14: start-up cost).

minio's package ``__init__`` imports ``MinioAdmin`` whatever one imports from minio (``from
minio.api import Minio`` runs the package first), and with it argon2 and pycryptodome: 1.3
MiB and about 3% of a run's start-up instructions. pika's ``__init__`` imports all of
``pika.adapters``, whose ``__init__`` imports the asyncio and blocking adapters, and asyncio
with them, for a sidecar that uses only ``SelectConnection``: about 5%. urllib3's
``http2`` package (HTTP/2, which the sidecar does not use) imports ``importlib.metadata``,
and zipfile and csv with it, because ``urllib3.connection`` imports its ``probe``: 1.5%.

``defer`` puts a package module in ``sys.modules`` as the import system makes it
(``importlib.util.module_from_spec``) but does not run its ``__init__`` yet; the sidecar
imports the submodules it uses (``minio.helpers``, ``pika.adapters.select_connection``, ...).
The first time anything asks the package for a name it lacks (``from minio import Minio``,
``pika.BlockingConnection``: PEP 562 ``__getattr__``), its ``__init__`` runs in full, so for
any other user the package is what it always was, loaded later. A subpackage can be
deferred before its parent package is loaded (``urllib3.http2``, which urllib3's own
``__init__`` imports): it is found without importing the parent, which is then imported
among the ``used`` modules and given the subpackage as its attribute.

What submodules take from their package at import are literal constants of its
``__init__`` (``__title__`` and ``__version__`` for minio's user agent, ``__version__`` for
pika's client properties): ``defer`` reads them from that source, as written there. It
checks itself: if the package is loaded already, nothing changes; if it cannot be loaded
this way (a constant is missing or not a literal, a submodule fails), it is imported as
usual.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any


def defer(name: str, used: Sequence[str], constants: Sequence[str] = (),
          before_init: Callable[[], object] = lambda: None) -> bool:
    """Register package ``name`` without running its ``__init__``, then import ``used``
    (its submodules the sidecar imports first); True if done this way. ``constants``: the
    literal names of the ``__init__`` set at once. ``before_init`` runs before the
    ``__init__`` does (when first asked for a name)."""
    if name in sys.modules:
        return False
    top = name.split(".")[0]
    parent, _, child = name.rpartition(".")
    try:
        package = _package(name, constants, before_init)
        sys.modules[name] = package
        bound = parent in sys.modules
        if bound:  # as the import system binds a loaded submodule
            setattr(sys.modules[parent], child, package)
        for module in used:  # a parent not loaded yet must be one of them
            importlib.import_module(module)
        if parent and not bound:  # now that ``used`` loaded it
            setattr(sys.modules[parent], child, package)
    except Exception:  # not what this module expects: the package as usual
        for loaded in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[loaded]
        before_init()
        importlib.import_module(name)
        return False
    return True


def _package(name: str, constants: Sequence[str],
             before_init: Callable[[], object]) -> ModuleType:
    spec = _spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an importable package")
    package = importlib.util.module_from_spec(spec)
    vars(package).update(_literals(spec.loader, name, constants))
    loader = spec.loader
    ran = False
    lock = threading.RLock()  # two threads asking first: one runs the __init__, once

    def __getattr__(attr: str) -> Any:
        nonlocal ran
        with lock:
            if attr in vars(package):  # another thread's __init__ made it meanwhile
                return vars(package)[attr]
            if ran or importlib.util.find_spec(f"{name}.{attr}") is not None:
                # a submodule (``from . import time``): the import system loads it, not this
                raise AttributeError(f"module {name!r} has no attribute {attr!r}")
            ran = True
            before_init()
            loader.exec_module(package)
        return getattr(package, attr)

    setattr(package, "__getattr__", __getattr__)  # noqa: B010 - mypy: ModuleType has one
    return package


def _spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The module's spec, found without importing its parent package if that is not
    loaded yet (``importlib.util.find_spec`` would import it, and its ``__init__`` may be
    what imports ``name``)."""
    parent = name.rpartition(".")[0]
    if not parent or parent in sys.modules:
        return importlib.util.find_spec(name)
    outer = _spec(parent)
    if outer is None or outer.submodule_search_locations is None:
        return None
    return importlib.machinery.PathFinder.find_spec(name, outer.submodule_search_locations)


def _literals(loader: Any, name: str, constants: Sequence[str]) -> dict[str, object]:
    """The values the top-level assignments of the package's source give ``constants``."""
    if not constants:
        return {}
    found = {}
    for node in ast.parse(loader.get_source(name)).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in constants):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    missing = set(constants) - found.keys()
    if missing:
        raise ImportError(f"{name}'s __init__ sets no literal {sorted(missing)}")
    return found
