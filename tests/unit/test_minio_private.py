"""sidecar/shell/io/minio_private.py: the one module that touches minio's private internals checks
them before first use (the lean path's at start-up, the client's when it is made); the
checks pass on the installed minio and catch a change. The
fallback to minio's public API is run against moto in tests/integration/test_minio_fallback.py
and tests/integration/test_multipart.py."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
from minio import Minio, helpers

from sidecar.shell.io import minio_private

SIDECAR = Path(minio_private.__file__).parents[1]
KW = {"access_key": "a", "secret_key": "s", "region": "us-east-1"}


def make(**kw: object) -> tuple[Minio, str | None]:
    return minio_private.make_client("127.0.0.1:9", **{**KW, **kw})


@pytest.mark.parametrize("secure", [False, True])
def test_the_check_passes_on_the_installed_minio(secure: bool) -> None:
    client, problem = make(secure=secure, http_client=urllib3.PoolManager())
    assert problem is None
    assert isinstance(client, minio_private.streaming_class())


def test_a_private_method_whose_parameters_changed_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def renamed(self, bucket_name, object_name, data, headers, upload_id, part_no):
        raise AssertionError("never called")
    monkeypatch.setattr(Minio, "_upload_part", renamed)
    client, problem = make()
    assert problem is not None and "Minio._upload_part" in problem and "\n" not in problem
    assert type(client) is Minio  # the plain client: no private override in the way


@pytest.mark.parametrize("name", ["_complete_multipart_upload", "_build_headers"])
def test_a_missing_private_method_is_caught(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delattr(Minio, name)
    assert make()[1] == f"Minio.{name} is missing"


def test_a_missing_helper_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(helpers, "get_part_info")
    assert make()[1] == "minio.helpers.get_part_info is missing"


@pytest.mark.parametrize(("attribute", "value", "expected"), [
    ("_provider", object(), "Minio._provider has no retrieve()"),
    ("_base_url", object(), "AttributeError"),
])
def test_a_changed_private_attribute_is_caught(monkeypatch: pytest.MonkeyPatch, attribute: str,
                                               value: object, expected: str) -> None:
    original = Minio.__init__

    def init(self, *args, **kw):
        original(self, *args, **kw)
        setattr(self, attribute, value)
    monkeypatch.setattr(Minio, "__init__", init)
    client, problem = make()
    assert problem is not None and problem.startswith(expected), problem
    assert type(client) is Minio


@pytest.mark.parametrize(("endpoint", "secure"), [("127.0.0.1:9", False), ("127.0.0.1:9", True),
                                                  ("s3.amazonaws.com", True)])
def test_the_lean_paths_check_passes_on_the_installed_minio(endpoint: str,
                                                           secure: bool) -> None:
    base = minio_private.base_url(endpoint, secure, "us-east-1")
    assert minio_private.direct_problem(base) is None
    client = Minio(endpoint, secure=secure, region="us-east-1")
    assert (base.is_https, base.is_aws_host, base.region) == (
        client._base_url.is_https, client._base_url.is_aws_host, client._base_url.region)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m.delattr(helpers, "BaseURL"), "minio.helpers.BaseURL is missing"),
    (lambda m: m.delattr(helpers, "quote"), "minio.helpers.quote is missing"),
    (lambda m: m.setattr(helpers.BaseURL, "build", lambda self, method, region: None),
     "TypeError"),
    (lambda m: m.setattr(helpers.BaseURL, "region", None), "BaseURL.region is None"),
])
def test_a_change_of_what_the_lean_path_uses_is_caught(
        monkeypatch: pytest.MonkeyPatch, change: Callable[[pytest.MonkeyPatch], None],
        expected: str) -> None:
    base = minio_private.base_url("127.0.0.1:9", False, "us-east-1")
    change(monkeypatch)
    problem = minio_private.direct_problem(base)
    assert problem is not None and problem.startswith(expected), problem


def test_check_object_name_refuses_what_this_minio_refuses() -> None:
    minio_private.check_object_name("a/b c")
    with pytest.raises(ValueError):
        minio_private.check_object_name("")


PRIVATE = re.compile(r"\b(client|super\(\))\._[a-z]\w*|\._(http|base_url|provider|user_agent|"
                     r"get_region|build_headers|\w+_multipart_upload|upload_part)\b")


def test_no_other_module_touches_minios_private_internals() -> None:
    """Every access goes through minio_private (DirectS3's ``self._http`` is its own field;
    a name in ``quotes`` is a comment)."""
    found = []
    for path in sorted(SIDECAR.rglob("*.py")):
        if path.name == "minio_private.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line) and "self._http" not in line and "``" not in line:
                found.append(f"{path.relative_to(SIDECAR)}:{number}: {line.strip()}")
    assert found == []


IMPORTED = """
import sys
from types import SimpleNamespace
from sidecar.shell.io.storage import Storage
settings = SimpleNamespace(data_volume_path=".", storage_timeout=1, minio_url="127.0.0.1:9",
    storage_workers=1, minio_use_ssl=False, s3_ca_file="", minio_access_key="a",
    minio_secret_key="s", s3_region="us-east-1", part_size=5 << 20, storage_attempts=1,
    storage_backoff_max=0.1, minio_output_bucket="b", s3_small_objects=sys.argv[1])
Storage(settings, print).shutdown()
print("sidecar.shell.io.s3direct" in sys.modules)
"""


@pytest.mark.parametrize(("mode", "imported"), [("minio", "False"), ("direct", "True")])
def test_the_direct_path_is_imported_only_when_selected(mode: str, imported: str) -> None:
    """SIDECAR_S3_SMALL_OBJECTS=minio needs nothing of s3direct.py (nor that it imports)."""
    result = subprocess.run([sys.executable, "-c", IMPORTED, mode], capture_output=True,
                            text=True, check=True, timeout=60)
    assert result.stdout.split() == [imported], result.stderr


def test_the_module_imports_on_a_minio_without_its_name_check_helpers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A minio that drops both helpers must still import, or the fallback never runs."""
    import importlib.util

    monkeypatch.delattr(helpers, "check_object_name", raising=False)
    monkeypatch.delattr(helpers, "check_non_empty_string", raising=False)
    spec = importlib.util.spec_from_file_location("minio_private_copy",
                                                  minio_private.__file__)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    copy.check_object_name("frag/a.txt")
    with pytest.raises(ValueError):
        copy.check_object_name("")
