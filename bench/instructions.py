"""Instructions per 1→1 fragment of the loop thread's pure-Python part (core, metrics
observer, journal Recorder), counted by callgrind: a figure the machine's load does not
change, unlike the timings of bench/observer_bench.py on a shared machine.

    python bench/instructions.py [--observers none,metrics,journal,both] [--small 200]
                                 [--large 1200] [--events-per-turn 8] [--repo DIR]

Each variant runs the synthetic run of bench/journal_bench.py twice under
``valgrind --tool=callgrind`` (``--small`` and ``--large`` fragments); the difference of
the two instruction totals divided by the difference of the fragment counts is the cost of
one fragment, without start-up. The observers are called as the Runner calls them: after
every event, and their ``turn_ended`` (where they have one) once every
``--events-per-turn`` events, the loop turn of a busy sidecar (8.3 events per turn were
counted in ``python -m bench whole --fragments 300``; 1 is the worst case, an idle sidecar
fed one event at a time). ``--repo``: measure another checkout's code (a worktree of
the commit before a change), for a before/after. Needs valgrind. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROGRAM = """
import sys, tempfile
sys.path[:0] = [{bench!r}, {repo!r}]
from journal_bench import synthetic_run
from sidecar.shell.journal import Recorder
from sidecar.shell.metrics import Metrics, MetricsObserver
from sidecar.shell.hooks import Observer
kind, n, per_turn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tmp = tempfile.mkdtemp()

def observe(core):
    chosen = []
    if kind in ("metrics", "both"):
        chosen.append(MetricsObserver(Metrics(), core))
    if kind in ("journal", "both"):
        chosen.append(Recorder(tmp, core, max_bytes=1 << 40, keep=4))

    default = getattr(Observer, "turn_ended", None)  # as the Runner: only where overridden
    turn_ends = [o.turn_ended for o in chosen
                 if getattr(type(o), "turn_ended", default) is not default]
    events = [0]

    def all_of(*args):
        for observer in chosen:
            observer(*args)
        events[0] += 1
        if events[0] % per_turn == 0:
            for end in turn_ends:
                end()
    return all_of

synthetic_run(n, observe)
"""


def instructions(repo: Path, kind: str, fragments: int, per_turn: int = 8) -> int:
    program = PROGRAM.format(bench=str(repo / "bench"), repo=str(repo))
    return collected(program, kind, str(fragments), str(per_turn))


# one thread at a time, each its turn (--fair-sched: a multithreaded sidecar's threads too)
CALLGRIND = ("valgrind", "--tool=callgrind", "--fair-sched=yes",
             "--callgrind-out-file=/dev/null")


def total(output: str) -> int:
    """callgrind's instruction total, from its closing lines (the last one printed)."""
    found = re.findall(r"Collected : (\d+)", output)
    if not found:
        raise RuntimeError("no callgrind total in the output:\n" + output[-3000:])
    return int(found[-1])


def collected(program: str, *args: str, python: str = sys.executable,
              **run: Any) -> int:
    """The instructions callgrind counts in ``python -c program *args`` (``run``: more
    arguments of ``subprocess.run``, e.g. ``env``, ``cwd``); its output if it fails."""
    done = subprocess.run([*CALLGRIND, python, "-c", program, *args], capture_output=True,
                          text=True, check=False, **run)
    if done.returncode:
        raise RuntimeError(f"exit code {done.returncode}:\n{done.stderr[-3000:]}")
    return total(done.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", default="none,metrics,journal,both")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--events-per-turn", type=int, default=8)
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    args = parser.parse_args()
    print(f"instructions per 1→1 fragment ({args.large} - {args.small} fragments, "
          f"{args.events_per_turn} events per loop turn), code in {args.repo}:")
    for kind in args.observers.split(","):
        small = instructions(args.repo, kind, args.small, args.events_per_turn)
        large = instructions(args.repo, kind, args.large, args.events_per_turn)
        print(f"  core + {kind:8s} {(large - small) / (args.large - args.small) / 1000:8.1f} k")
    return 0


if __name__ == "__main__":
    sys.exit(main())
