"""`iterum-sidecar replay JOURNAL`: replay a journal and check the core agrees with it.

The engine is ``Replayer`` (sidecar/tools/replayer.py): the core rebuilt from the journal's
first checkpoint, fed every recorded event with its recorded clock reading, every
transition and effect compared with the recording. This module prints what it found: a
timeline per fragment, a summary, the first divergence. ``--step`` hands the replayer to
the step-through debugger (sidecar/tools/debugger.py) instead.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from typing import TextIO

from states import INPUT, OUTPUT

from ..shell.journal import Journal, JournalError, load
from .debugger import run_debugger
from .replayer import TERMINAL, Replayer, Track, duration


def timeline_line(track: Track, origin: float, now: float) -> str:
    parts = []
    for (state, entered), nxt in zip(track.states, [*track.states[1:], None], strict=True):
        if nxt is not None:
            parts.append(f"{state} {duration(nxt[1] - entered)}")
        elif state in TERMINAL[track.machine]:
            parts.append(state)
        elif track.dropped:
            parts.append(f"{state} → dropped (a duplicate of a fragment in flight)")
        else:
            parts.append(f"{state} ({duration(now - entered)} so far, not finished)")
    start = track.states[0][1] - origin
    who = f"{track.machine:<6} #{track.serial:<4} {track.fragment[:12] or '(no id)':<12}"
    return f"{who} +{start:8.3f}s  " + " → ".join(parts)


def print_timeline(replayer: Replayer, out: TextIO, prefix: str = "", limit: int = 0) -> None:
    tracks = replayer.fragment_tracks(prefix)
    origin = replayer.first_t if replayer.first_t is not None else replayer.now
    print("timeline (state, time in state; + is the start, relative to the first event):",
          file=out)
    shown = tracks if limit <= 0 else tracks[:limit]
    for track in shown:
        print("  " + timeline_line(track, origin, replayer.now), file=out)
    if len(shown) < len(tracks):
        print(f"  ... and {len(tracks) - len(shown)} more (--limit 0 shows all, "
              "--fragment ID one fragment)", file=out)
    if not tracks:
        print("  (no fragments" + (f" matching {prefix!r}" if prefix else "") + ")", file=out)


def print_summary(replayer: Replayer, out: TextIO) -> None:
    tracks = replayer.fragment_tracks()
    origin = replayer.first_t if replayer.first_t is not None else replayer.now
    inputs = Counter("dropped" if t.dropped else t.state
                     for t in tracks if t.machine == INPUT.name)
    outputs = Counter(t.state for t in tracks if t.machine == OUTPUT.name)
    unfinished = [t for t in tracks if not t.finished]
    where = (f" (up to the divergence at seq {replayer.divergence.seq})"
             if replayer.divergence is not None else "")
    print(f"summary{where}:", file=out)
    print(f"  {replayer.steps} events over {duration(replayer.now - origin)} "
          f"(loop clock), {sum(inputs.values())} input(s), {sum(outputs.values())} "
          "output(s)", file=out)
    for name, counts in (("inputs", inputs), ("outputs", outputs)):
        if counts:
            print(f"  {name}: " + ", ".join(f"{n} {s}" for s, n in counts.most_common()),
                  file=out)
    print("  events: " + ", ".join(f"{k} {n}" for k, n in replayer.kinds.most_common()),
          file=out)
    step = replayer.core.step.state
    ending = f"exit code {replayer.exit.code} ({replayer.exit.reason})" if replayer.exit else (
        "no exit recorded")
    print(f"  step: {step}, {ending}", file=out)
    if unfinished:
        print(f"  not finished at the end of the journal: {len(unfinished)} "
              "(" + ", ".join(f"{t.label} {t.state}" for t in unfinished[:5])
              + (", ..." if len(unfinished) > 5 else "") + ")", file=out)


def describe_journal(journal: Journal) -> str:
    h = journal.header
    first = journal.segments[0]
    last_seq = first.after + journal.count
    where = first.path if len(journal.segments) == 1 else (
        f"{first.path} + {len(journal.segments) - 1} more segment(s)")
    start = "the start of the run" if first.after == 0 else f"the checkpoint after {first.after}"
    return (f"journal: {where}\n  run {h.get('run')}, recorded by sidecar {h.get('sidecar')} "
            f"(python {h.get('python')}, transitions {h.get('transitions')}) at "
            f"{h.get('started')}; events {first.after + 1}..{last_seq}, replayed from {start}"
            + ("\n  note: the last line was cut short (the process was killed while writing)"
               if journal.segments[-1].truncated else ""))


def run_replay(path: str, *, run: int | None = None, fragment: str = "", limit: int = 50,
               quiet: bool = False, step: bool = False, out: TextIO | None = None,
               err: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """`iterum-sidecar replay`: 0 when the replay matches, 1 at a divergence, 2 when the
    journal cannot be read."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        journal = load(path, run)
        replayer = Replayer(journal)
    except (JournalError, ValueError) as problem:
        print(f"iterum-sidecar replay: {problem}", file=err)
        return 2
    gc.freeze()  # the journal lives until exit: keep the collector from rescanning it
    print(describe_journal(journal), file=out)
    if step:
        return run_debugger(replayer, fragment, stdin=stdin,
                            stdout=out if out is not sys.stdout else None)
    replayer.run()
    if not quiet:
        print_timeline(replayer, out, fragment, limit)
    print_summary(replayer, out)
    if replayer.divergence is not None:
        print(replayer.divergence.describe(), file=out)
        return 1
    print(f"replay OK: {replayer.steps} events, every transition and effect as recorded",
          file=out)
    return 0
