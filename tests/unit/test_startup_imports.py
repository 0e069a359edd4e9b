"""What a run imports (issue 14: start-up CPU and memory): only what every run uses.

A fresh interpreter does what ``iterum-sidecar run`` does up to its I/O (the CLI module,
the configuration loaded from a manager's environment, the Runner built with its
observers by ``operate.build``), then reports ``sys.modules``. What only some runs or
other commands need is imported where it is used, so it must not be there: the tools
(demo, replay, debugger, graph, ...), rich, OpenLineage (SIDECAR_OPENLINEAGE is off here),
``requests`` (the manager check goes through urllib3, which the S3 client loads anyway),
minio's admin client with argon2, pycryptodome, cffi and pycparser (loaded only if
something asks minio's package for its names: sidecar/shell/io/packages.py), minio's client
(``minio.api`` and its dataclass-heavy config modules: made on first need,
sidecar/shell/io/s3client.py; tests/unit/test_s3client.py runs transfers without it), pika's
asyncio and blocking adapters, and asyncio (the same, for pika's packages), and
importlib.metadata with zipfile (urllib3's HTTP/2 package: the same).
No timing is asserted: what is not imported costs nothing, on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_config import manager_env

ROOT = Path(__file__).resolve().parents[2]
RUN_PATH = """
import json, sys
from sidecar import cli
from sidecar.shell import config
from sidecar.shell.operate import build

build(config.load(json.loads(sys.argv[1])))  # as `run` does, up to the loop: no I/O yet
print(json.dumps(sorted(n for n, m in sys.modules.items() if m is not None)))
"""
# top-level packages (or modules) a run must not import
NOT_IMPORTED = ("rich", "openlineage", "requests", "graphviz", "moto", "pyterum", "cffi",
                "pycparser", "Crypto", "argon2", "asyncio", "zipfile")
# the project's modules only other commands use, minio's admin client
NOT_IMPORTED_PREFIXES = ("sidecar.tools", "minio.minioadmin", "minio.crypto", "minio.api",
                         "minio.datatypes", "minio.commonconfig", "minio.lifecycleconfig",
                         "minio.notificationconfig", "minio.replicationconfig", "minio.select",
                         "pika.adapters.asyncio_connection",
                         "pika.adapters.blocking_connection", "importlib.metadata",
                         "urllib3.http2.connection")


def run_path_modules(env: dict[str, str]) -> set[str]:
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    proc_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), proc_env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", RUN_PATH, json.dumps(env)], env=proc_env,
                         capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(out.stdout))


def test_a_run_imports_neither_the_tools_nor_rich_openlineage_or_requests(
        tmp_path: Path) -> None:
    modules = run_path_modules(manager_env(tmp_path))

    assert "sidecar.shell.loop" in modules and "minio" in modules  # it did load the run
    top = {name.split(".")[0] for name in modules}
    assert top.isdisjoint(NOT_IMPORTED), sorted(top & set(NOT_IMPORTED))
    tools = sorted(m for m in modules if m.startswith(NOT_IMPORTED_PREFIXES))
    assert tools == []


def test_openlineage_is_imported_when_the_run_uses_it(tmp_path: Path) -> None:
    """The other side of the lazy import: SIDECAR_OPENLINEAGE on loads it at start."""
    env = {**manager_env(tmp_path), "SIDECAR_OPENLINEAGE": "console"}

    assert "openlineage" in {m.split(".")[0] for m in run_path_modules(env)}
