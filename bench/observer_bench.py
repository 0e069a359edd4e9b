"""The loop's cost of the observers: metrics and journal, per 1→1 fragment.

    python bench/observer_bench.py [--fragments 5000] [--runs 5]

The synthetic run of bench/journal_bench.py (the real core, a fake shell that answers at
once, prefetch 16) with no observer, with the metrics observer, with the journal's
Recorder and with both; best of ``--runs`` each, runs interleaved so that a burst of load
on a shared machine hits every variant alike. Each line gives the time in ``Core.handle``
and the observers, and (in brackets) the time in the observers alone, timed around their
calls: on a noisy machine a steadier figure than the difference of two runs. Benchmarks
measure; no test asserts a timing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.journal_bench import synthetic_run
from sidecar.core import Core
from sidecar.shell.journal import Recorder
from sidecar.shell.metrics import Metrics, MetricsObserver


def observers(kind: str, tmp: str, spent: list[float]) -> Callable[[Core], Callable] | None:
    """What synthetic_run attaches for ``kind``; the seconds the observers take are added
    to ``spent[0]``."""
    def observe(core: Core) -> Callable:
        chosen: list[Callable] = []
        if kind in ("metrics", "both"):
            chosen.append(MetricsObserver(Metrics(), core))
        if kind in ("journal", "both"):
            chosen.append(Recorder(tempfile.mkdtemp(dir=tmp), core, max_bytes=1 << 40,
                                   keep=4))

        def all_of(*args: object) -> None:
            start = perf_counter()
            for observer in chosen:
                observer(*args)
            spent[0] += perf_counter() - start
        return all_of

    return None if kind == "none" else observe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fragments", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    kinds = ("none", "metrics", "journal", "both")
    best = dict.fromkeys(kinds, float("inf"))
    alone = dict.fromkeys(kinds, float("inf"))
    tmp = tempfile.mkdtemp(prefix="observer-bench-")
    try:
        synthetic_run(200, observers("both", tmp, [0.0]))  # warm up imports and caches
        for _ in range(args.runs):
            for kind in kinds:
                spent = [0.0]
                _, _, busy = synthetic_run(args.fragments, observers(kind, tmp, spent))
                best[kind] = min(best[kind], busy)
                alone[kind] = min(alone[kind], spent[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def us(seconds: float) -> float:
        return 1e6 * seconds / args.fragments

    print(f"{args.fragments} 1→1 fragments, best of {args.runs}, µs per fragment:")
    print(f"  core alone:        {us(best['none']):7.1f}")
    for kind in kinds[1:]:
        added = us(best[kind] - best["none"])
        print(f"  core + {kind + ':':11s}{us(best[kind]):7.1f}  (+{added:.1f}; the observers "
              f"alone {us(alone[kind]):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
