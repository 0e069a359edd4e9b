"""pycryptodome's ctypes back end, chosen before minio loads it (issue 14: start-up cost).

minio's package imports its admin client when its ``__init__`` runs (packages.py:
only if something asks the package for a name), and with it pycryptodome
(``minio.crypto``), which the sidecar never calls. When cffi is importable,
pycryptodome's ``Crypto.Util._raw_api`` builds a cffi FFI and parses the C declarations of
each native module it loads with pycparser, in pure Python: about a tenth of a run's
start-up instructions and 1.4 MiB. Without cffi it uses ctypes, its other back end (the one
it picks by itself under ``python -OO``), loading the same native modules.

``prefer_ctypes`` imports that one module with cffi hidden from this import only, and
puts cffi back at once: for everything else cffi stays importable (the run has no other
thread yet). It checks itself: if pycryptodome was imported already, nothing changes; if
it cannot be imported without cffi (a release that needs it), it is imported as usual.
"""

from __future__ import annotations

import importlib
import sys

MODULE = "Crypto.Util._raw_api"  # where pycryptodome chooses cffi or ctypes, once


def prefer_ctypes() -> str:
    """Import pycryptodome's back end (ctypes if it works without cffi); returns its name
    ("cffi", "ctypes"), "" if pycryptodome is not installed."""
    if MODULE not in sys.modules:
        _import_without("cffi")
    if MODULE not in sys.modules:
        try:
            importlib.import_module(MODULE)
        except ImportError:
            return ""
    return str(getattr(sys.modules[MODULE], "backend", ""))


def _import_without(hidden: str) -> None:
    saved = sys.modules.get(hidden)
    sys.modules[hidden] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        importlib.import_module(MODULE)
    except ImportError:
        sys.modules.pop(MODULE, None)  # tried again with cffi by the caller
    finally:
        if saved is None:
            del sys.modules[hidden]
        else:
            sys.modules[hidden] = saved
