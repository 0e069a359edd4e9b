"""Instructions, modules and memory of a run's start-up up to its I/O (issue 14), a figure
the machine's load does not change, unlike the start-up timings of `python -m bench whole`.

    python bench/startup_instructions.py [--repo DIR] [--repeat 3]

A fresh interpreter does what ``iterum-sidecar run`` does before it connects (the CLI
module, the configuration loaded from a manager's environment, the Runner built with its
observers by ``operate.build``), as ``tests/unit/test_startup_imports.py`` does. Printed:
the instructions callgrind counts for it (minus those of ``python -c pass``), and, without
valgrind, the modules in ``sys.modules``, the CPU (``os.times``, lowest of ``--repeat``) and
``ru_maxrss``. ``--repo``: measure another checkout (e.g. /work/wt-base) for a
before/after. The checkout's ``.pyc`` files are written first, as ``python -m bench whole``
does (bench/trees.py): in a fresh worktree with PYTHONDONTWRITEBYTECODE set, the count
would otherwise include compiling the sidecar (1,553 M instead of 1,098 M).
Needs valgrind. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from instructions import collected

HERE = Path(__file__).resolve().parent
PROGRAM = """
import json, os, resource, sys
from sidecar import cli
from sidecar.shell import config
from sidecar.shell.operate import build

build(config.load(json.loads(sys.argv[1])))
t = os.times()
print(json.dumps([len(sys.modules), t.user + t.system,
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))
"""


def environment(volume: str) -> dict[str, str]:
    """What the manager gives a step's sidecar (as tests/unit/test_config.py's)."""
    h = "abcdefghijklmnopqrstuvwxyz012345"
    return {
        "DATA_VOLUME_PATH": volume, "ITERUM_NAME": f"{h}-edge-detection",
        "PIPELINE_HASH": h, "ITERUM_CONFIG": "{}", "ITERUM_CONFIG_PATH": "config",
        "MINIO_URL": "minio:9000", "MINIO_ACCESS_KEY": "access-key",
        "MINIO_SECRET_KEY": "secret-key-secret", "MINIO_USE_SSL": "0",
        "MINIO_OUTPUT_BUCKET": f"{h}-out", "MQ_BROKER_URL": "amqp://u:p@mq:5672",
        "MQ_INPUT_QUEUE": f"{h}-in", "MQ_OUTPUT_QUEUE": f"{h}-out",
        "MANAGER_URL": "http://manager:3001", "TRANSFORMATION_STEP_INPUT": "tts.sock",
        "TRANSFORMATION_STEP_OUTPUT": "fts.sock"}


def _environ(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["PYTHONPATH"] = str(repo)
    return env


def _python(repo: Path) -> str:
    return str(repo / ".venv" / "bin" / "python")


def run(repo: Path, code: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([_python(repo), "-c", code, *args], env=_environ(repo), cwd=repo,
                          capture_output=True, text=True, check=True)


def instructions(repo: Path, code: str, args: list[str]) -> int:
    return collected(code, *args, python=_python(repo), env=_environ(repo), cwd=repo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repo = args.repo.resolve()
    subprocess.run([_python(repo), "-m", "compileall", "-q", *(
        str(repo / p) for p in ("sidecar", "states") if (repo / p).is_dir())],
        check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as volume:
        argv = [json.dumps(environment(volume))]
        samples = [json.loads(run(repo, PROGRAM, argv).stdout)
                   for _ in range(args.repeat)]
        count = instructions(repo, PROGRAM, argv) - instructions(repo, "pass", [])
    print(f"{repo}: {count / 1e6:,.0f} M instructions, {samples[0][0]} modules, "
          f"CPU {min(s[1] for s in samples):.2f} s, "
          f"ru_maxrss {min(s[2] for s in samples):.1f} MiB (lowest of {args.repeat})")


if __name__ == "__main__":
    sys.exit(main())
