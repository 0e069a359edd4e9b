"""minio's client without its admin client, until something asks for the package's names.

minio's package ``__init__`` imports ``MinioAdmin`` whatever one imports from minio (``from
minio.api import Minio`` runs the package first), and with it argon2 and pycryptodome,
for code the sidecar never calls: 1.3 MiB and about 3% of a run's start-up instructions
(issue 14). ``register`` puts the package module in ``sys.modules`` as the import system
makes it (``importlib.util.module_from_spec``) but does not run its ``__init__`` yet; the
sidecar imports the submodules it uses (``minio.api``, ``minio.error``, ...). The first
time anything asks the package for a name it lacks (``from minio import Minio``,
``minio.MinioAdmin``: PEP 562 ``__getattr__``), its ``__init__`` runs in full, so for any
other user minio is what it always was, loaded later.

The one thing a submodule takes from the package at import is ``__title__`` and
``__version__`` (``minio.helpers``' user agent): the version is the installed
distribution's, the title minio's constant. ``register`` checks itself: if minio is loaded
already, nothing changes; if the package cannot be loaded this way, it is imported as usual.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

NAME = "minio"
TITLE = "minio-py"  # minio/__init__.py's __title__ (its user agent's product)
USED = ("minio.api", "minio.error")  # what the adapters import before anything else


def register(before_init: Callable[[], object] = lambda: None) -> bool:
    """Register minio's package without running its ``__init__``; True if done this way.
    ``before_init`` runs before the ``__init__`` does (when first asked for a name)."""
    if NAME in sys.modules:
        return False
    try:
        package = _package(before_init)
        sys.modules[NAME] = package
        for name in USED:
            importlib.import_module(name)
    except Exception:  # not what this module expects: minio as usual
        for name in [n for n in sys.modules if n == NAME or n.startswith(NAME + ".")]:
            del sys.modules[name]
        before_init()
        importlib.import_module(NAME)
        return False
    return True


def _package(before_init: Callable[[], object]) -> ModuleType:
    spec = importlib.util.find_spec(NAME)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{NAME} is not an importable package")
    package = importlib.util.module_from_spec(spec)
    package.__title__ = TITLE  # type: ignore[attr-defined]
    package.__version__ = importlib.metadata.version(NAME)  # type: ignore[attr-defined]
    loader = spec.loader
    ran = False
    lock = threading.RLock()  # two threads asking first: one runs the __init__, once

    def __getattr__(name: str) -> Any:
        nonlocal ran
        with lock:
            if name in vars(package):  # another thread's __init__ made it meanwhile
                return vars(package)[name]
            if ran or importlib.util.find_spec(f"{NAME}.{name}") is not None:
                # a submodule (``from . import time``): the import system loads it, not this
                raise AttributeError(f"module {NAME!r} has no attribute {name!r}")
            ran = True
            before_init()
            loader.exec_module(package)
        return getattr(package, name)

    setattr(package, "__getattr__", __getattr__)  # noqa: B010 - mypy: ModuleType has one
    return package
