"""cryptobackend: pycryptodome is loaded with its ctypes back end, cffi stays importable,
and a module that cannot load without cffi is imported as usual (its fallback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.shell.io import cryptobackend

CHECK = """
import sys
import sidecar.shell.io
from minio import MinioAdmin  # loads pycryptodome (packages.py)
from Crypto.Util import _raw_api
import cffi  # still importable for everything else
print(_raw_api.backend, "pycparser" in sys.modules)
"""


def test_minio_loads_pycryptodome_with_ctypes_and_cffi_stays_importable() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["ctypes", "False"]


def test_a_module_that_needs_cffi_is_imported_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needs_cffi.py").write_text("import cffi\nbackend = 'cffi'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cryptobackend, "MODULE", "needs_cffi")
    monkeypatch.delitem(sys.modules, "needs_cffi", raising=False)
    before = sys.modules.get("cffi")

    assert cryptobackend.prefer_ctypes() == "cffi"
    assert sys.modules.get("cffi") is not None and (before is None or sys.modules["cffi"] is before)
    sys.modules.pop("needs_cffi")


def test_nothing_installed_gives_no_back_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cryptobackend, "MODULE", "no_such_module_here")

    assert cryptobackend.prefer_ctypes() == ""
    assert "no_such_module_here" not in sys.modules
