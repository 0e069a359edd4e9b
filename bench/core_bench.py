"""The core's CPU alone: ``Core.handle`` over a synthetic run, and one ``Lifecycle.fire``.

    python bench/core_bench.py [--fragments 5000] [--repeat 5]

Uses the synthetic 1→1 run of bench/journal_bench.py (a fake shell that answers at once, no
journal, no metrics) with the stuck-fragment watch off and on (``SIDECAR_STUCK_AFTER`` 300 s)
at prefetch 16 and 256, and times ``INPUT.fire`` with ``timeit``. Best of ``--repeat`` runs,
so that a busy machine inflates the figures as little as possible. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from journal_bench import synthetic_run

from states import INPUT


class _Model:
    state = "received"


def fire_cost(repeat: int) -> float:
    """Seconds per ``INPUT.fire`` (one transition and its way back), best of ``repeat``."""
    model = _Model()

    def there_and_back() -> None:
        model.state = "received"
        INPUT.fire(model, "download_done")

    runs = timeit.repeat(there_and_back, number=20_000, repeat=repeat)
    return min(runs) / 20_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fragments", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.fragments
    synthetic_run(200)  # warm up imports and caches
    print(f"synthetic run: {n} 1→1 fragments, core alone, best of {args.repeat}")
    for prefetch in (16, 256):
        for stuck_after in (0.0, 300.0):
            best = min(synthetic_run(n, prefetch=prefetch, stuck_after=stuck_after)[2]
                       for _ in range(args.repeat))
            watch = f"stuck watch {'on ' if stuck_after else 'off'}"
            print(f"  prefetch {prefetch:3d}, {watch}: {1e6 * best / n:7.1f} µs/fragment")
    print(f"INPUT.fire: {1e6 * fire_cost(args.repeat):.2f} µs/transition (timeit, best of "
          f"{args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
