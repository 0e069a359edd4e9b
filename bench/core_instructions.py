"""Instructions per 1→1 fragment of ``Core.handle`` alone (no fake shell), and of the
Runner's own dispatch per event, counted by callgrind (the load does not change them).

    python bench/core_instructions.py [--fragments 500] [--repo DIR] [--what core,runner]
                                      [--events-per-turn 8]

``core``: the synthetic run of bench/journal_bench.py is recorded once as its list of
(event, clock) pairs, then fed to fresh cores; two processes under
``valgrind --tool=callgrind`` replay it once and three times, and the difference of their
instruction totals over twice the fragments is the cost of one fragment in ``Core.handle``
(start-up, the recording and the fake shell cancel out). bench/instructions.py counts the
fake shell too.

``runner``: ``Runner.feed`` with a stand-in core that returns the recorded effects at
once, performers that do nothing, no observers and a loop timer that is never due: what
the Runner itself adds per event (its queue, the observer fan-out, the totals, the effect
dispatch, ``_reschedule``), half the events handed over through ``post`` and
``_take_posted`` as the storage workers' are. Its timers are pika's: every
``--events-per-turn`` events (8.3 a turn were counted in ``python -m bench whole
--fragments 300``; 1 is an idle sidecar's worst case) the loop's timer processing runs, as
at the end of a real loop turn, with what the Runner armed in it (its end of turn). Same
difference of two processes.

``--repo``: another checkout's code, for a before/after. Needs valgrind. Measures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from instructions import collected

HERE = Path(__file__).resolve().parent
PROGRAM = """
import sys
sys.path[:0] = [{bench!r}, {repo!r}]
sys.path.append({here!r})
from journal_bench import synthetic_run
what, n, rounds, per_turn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
recorded = []

def observe(core):
    def keep(event, now, effects, transitions):
        recorded.append((event, now, effects, list(transitions)))
    return keep

core, _, _ = synthetic_run(n, observe)
config = core.cfg
if what == "core":
    from sidecar.core import Core
    for _ in range(rounds):
        fresh = Core(config)
        handle = fresh.handle
        for event, now, _e, _t in recorded:
            handle(event, now)
else:
    try:
        from sidecar.shell.io.pika_turns import TurnLoop as IOLoop
    except ImportError:  # a checkout from before it
        from pika.adapters.select_connection import IOLoop
    from runner_stub import replaying, stub_runner
    runner = stub_runner(recorded)  # made once: its construction is not counted
    timers = IOLoop()  # pika's timers, run at the end of each turn as its loop runs them
    runner.ioloop.call_later = timers.call_later
    runner.ioloop.remove_timeout = timers.remove_timeout
    if hasattr(timers, "at_turn_end"):
        runner.ioloop.at_turn_end = timers.at_turn_end
    feed, post = runner.feed, runner.post
    for _ in range(rounds):
        runner.core = replaying(recorded)
        for i, (event, _n, _e, _t) in enumerate(recorded):
            if i % 2:
                post(event)
                runner._take_posted()
            else:
                feed(event)
            if i % per_turn == per_turn - 1:
                timers.process_timeouts()
"""


def instructions(repo: Path, what: str, fragments: int, rounds: int, per_turn: int) -> int:
    program = PROGRAM.format(bench=str(repo / "bench"), repo=str(repo), here=str(HERE))
    return collected(program, what, str(fragments), str(rounds), str(per_turn))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fragments", type=int, default=500)
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--what", default="core,runner")
    parser.add_argument("--events-per-turn", type=int, default=8)
    args = parser.parse_args()
    n, per_turn = args.fragments, args.events_per_turn
    print(f"instructions per 1→1 fragment ({n} fragments, 3 rounds - 1, {per_turn} events "
          f"per loop turn), code in {args.repo}:")
    for what in args.what.split(","):
        once = instructions(args.repo, what, n, 1, per_turn)
        thrice = instructions(args.repo, what, n, 3, per_turn)
        print(f"  {what:8s} {(thrice - once) / (2 * n) / 1000:8.1f} k")
    return 0


if __name__ == "__main__":
    sys.exit(main())
