"""Instructions per 1→1 fragment of the loop thread's pure-Python part (core, metrics
observer, journal Recorder), counted by callgrind: a figure the machine's load does not
change, unlike the timings of bench/observer_bench.py on a shared machine.

    python bench/instructions.py [--observers none,metrics,journal,both] [--small 200]
                                 [--large 1200] [--repo DIR]

Each variant runs the synthetic run of bench/journal_bench.py twice under
``valgrind --tool=callgrind`` (``--small`` and ``--large`` fragments); the difference of
the two instruction totals divided by the difference of the fragment counts is the cost of
one fragment, without start-up. ``--repo``: measure another checkout's code (a worktree of
the commit before a change), for a before/after. Needs valgrind. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAM = """
import sys, tempfile
sys.path[:0] = [{bench!r}, {repo!r}]
from journal_bench import synthetic_run
from sidecar.shell.journal import Recorder
from sidecar.shell.metrics import Metrics, MetricsObserver
kind, n = sys.argv[1], int(sys.argv[2])
tmp = tempfile.mkdtemp()

def observe(core):
    chosen = []
    if kind in ("metrics", "both"):
        chosen.append(MetricsObserver(Metrics(), core))
    if kind in ("journal", "both"):
        chosen.append(Recorder(tmp, core, max_bytes=1 << 40, keep=4))

    def all_of(*args):
        for observer in chosen:
            observer(*args)
    return all_of

synthetic_run(n, observe)
"""


def instructions(repo: Path, kind: str, fragments: int) -> int:
    program = PROGRAM.format(bench=str(repo / "bench"), repo=str(repo))
    return collected(program, kind, str(fragments))


def collected(program: str, *args: str) -> int:
    """The instructions callgrind counts in ``python -c program *args``."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", program, *args],
        capture_output=True, text=True, check=True)
    m = re.search(r"Collected : (\d+)", done.stderr)
    if m is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(m.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", default="none,metrics,journal,both")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    args = parser.parse_args()
    print(f"instructions per 1→1 fragment ({args.large} - {args.small} fragments), "
          f"code in {args.repo}:")
    for kind in args.observers.split(","):
        small = instructions(args.repo, kind, args.small)
        large = instructions(args.repo, kind, args.large)
        print(f"  core + {kind:8s} {(large - small) / (args.large - args.small) / 1000:8.1f} k")
    return 0


if __name__ == "__main__":
    sys.exit(main())
