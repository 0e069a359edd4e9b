"""`iterum-sidecar replay JOURNAL --step`: step through a recorded run, one event at a time.

A ``cmd.Cmd`` loop over a ``Replayer``: it works in a plain terminal and when its input is
piped (then every command is echoed after the prompt, so a transcript reads like a
session). Every step is still checked against the recording; a divergence stops the run.
``--fragment ID`` limits stepping and output to that fragment's lifecycle: its input(s),
and the outputs that name it as a predecessor.
"""

from __future__ import annotations

import cmd
import shlex
import sys
from dataclasses import dataclass
from typing import TextIO

from states import INPUT, OUTPUT, STEP

from ..core import Input, Output
from ..core import effects as fx
from .replayer import Replayer, Step, Track, duration, short

STATES = set(INPUT.states) | set(OUTPUT.states) | set(STEP.states)


@dataclass(frozen=True)
class Breakpoint:
    kind: str  # "state", "event" or "fragment"
    value: str

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


class Debugger(cmd.Cmd):
    prompt = "(replay) "

    def __init__(self, replayer: Replayer, fragment: str = "",
                 stdin: TextIO | None = None, stdout: TextIO | None = None):
        super().__init__(stdin=stdin, stdout=stdout)
        self.replayer = replayer
        self.fragment = fragment
        self.breakpoints: list[Breakpoint] = []
        self.seen: list[Step] = []  # steps shown (or, with --fragment, that touched it)
        self.echo = not (stdin or sys.stdin).isatty()
        if stdin is not None:
            self.use_rawinput = False
        self.intro = self._intro()

    # --- output ----------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def _intro(self) -> str:
        r = self.replayer
        focus = f", following fragment {self.fragment}" if self.fragment else ""
        return (f"{r.total} recorded events{focus}. Commands: next [n], continue, "
                "break state=S|event=Kind|fragment=ID, delete [n], show ID, list, effects, "
                "history [n], where, help, quit.")

    def _t(self, t: float) -> str:
        origin = self.replayer.first_t if self.replayer.first_t is not None else t
        return f"+{t - origin:.3f}s"

    def _show_step(self, step: Step) -> None:
        record = step.record
        self.say(f"[{record.seq}] {self._t(record.t)} {short(record.event, 160)}")
        keys = self.replayer.related(self.fragment) if self.fragment else None
        for tr in step.transitions:
            if keys is not None and (tr.machine, tr.serial) not in keys:
                continue
            who = f"{tr.machine} #{tr.serial}" + (f" {tr.fragment[:12]}" if tr.fragment else "")
            how = "" if tr.trigger == "new" else f"  ({tr.trigger})"
            self.say(f"    {who}: {tr.source or '(new)'} -> {tr.dest}{how}")
        effects = self._effects(step)
        if effects:
            self.say("    effects: " + "; ".join(short(e, 100) for e in effects))

    def _effects(self, step: Step) -> list[fx.Effect]:
        if not self.fragment:
            return step.effects
        keys = self.replayer.related(self.fragment)
        return [e for e in step.effects if self.replayer.effect_touches(e, keys, self.fragment)]

    # --- moving ------------------------------------------------------------------------

    def _advance(self) -> Step | None:
        """One step (with --fragment: up to the next step touching it)."""
        r = self.replayer
        while True:
            step = r.step()
            if step is None:
                self._at_end()
                return None
            if not self.fragment or r.step_touches(step, self.fragment):
                self.seen.append(step)
                return step

    def _at_end(self) -> None:
        r = self.replayer
        if r.divergence is not None:
            self.say(r.divergence.describe())
        else:
            self.say(f"end of the journal: {r.steps} events replayed, all as recorded")

    def _hit(self, step: Step) -> Breakpoint | None:
        keys = self.replayer.related(self.fragment) if self.fragment else None
        for bp in self.breakpoints:
            if bp.kind == "event" and type(step.record.event).__name__.lower() == bp.value:
                return bp
            if bp.kind == "state" and any(
                    tr.dest == bp.value and (keys is None or (tr.machine, tr.serial) in keys
                                             or tr.machine == STEP.name)
                    for tr in step.transitions):
                return bp
            if bp.kind == "fragment" and self.replayer.step_touches(step, bp.value):
                return bp
        return None

    def do_next(self, arg: str) -> None:
        """next [n]: replay the next n events (default 1) and show them."""
        count = _count(arg, 1)
        if count is None:
            self.say("usage: next [n]")
            return
        for _ in range(count):
            step = self._advance()
            if step is None:
                return
            self._show_step(step)

    do_n = do_next

    def do_continue(self, arg: str) -> None:
        """continue: replay until a breakpoint is hit or the journal ends."""
        if not self.breakpoints:
            self.say("(no breakpoints: running to the end)")
        while True:
            step = self._advance()
            if step is None:
                return
            bp = self._hit(step)
            if bp is not None:
                self.say(f"breakpoint {bp} hit:")
                self._show_step(step)
                return

    do_c = do_cont = do_continue

    def do_break(self, arg: str) -> None:
        """break state=S | event=Kind | fragment=ID: stop `continue` after a step where a
        fragment enters state S, whose event is of class Kind, or that touches fragment ID
        (an id prefix). Without an argument: list the breakpoints."""
        if not arg.strip():
            if not self.breakpoints:
                self.say("no breakpoints")
            for i, bp in enumerate(self.breakpoints, start=1):
                self.say(f"{i}: {bp}")
            return
        for word in shlex.split(arg):
            kind, sep, value = word.partition("=")
            if not sep or kind not in ("state", "event", "fragment") or not value:
                self.say(f"not a breakpoint: {word!r} (state=S, event=Kind or fragment=ID)")
                continue
            if kind == "state" and value not in STATES:
                self.say(f"no state {value!r}; states: {', '.join(sorted(STATES))}")
                continue
            if kind == "event":
                value = value.lower()
            bp = Breakpoint(kind, value)
            self.breakpoints.append(bp)
            self.say(f"breakpoint {len(self.breakpoints)}: {bp}")

    do_b = do_break

    def do_delete(self, arg: str) -> None:
        """delete [n]: remove breakpoint n, or all of them."""
        if not arg.strip():
            self.breakpoints.clear()
            self.say("all breakpoints deleted")
            return
        n = _count(arg, 0)
        if n is None or not 1 <= n <= len(self.breakpoints):
            self.say(f"no breakpoint {arg.strip()}")
            return
        self.say(f"deleted breakpoint {n}: {self.breakpoints.pop(n - 1)}")

    # --- looking -----------------------------------------------------------------------

    def do_show(self, arg: str) -> None:
        """show ID: one fragment (an id prefix, or #serial): its state, history, files,
        outputs and what it is waiting for."""
        prefix = arg.strip() or self.fragment
        if not prefix:
            self.say("usage: show ID (a fragment id prefix, or #serial)")
            return
        tracks = self.replayer.fragment_tracks(prefix)
        own = [t for t in tracks if t.fragment.startswith(prefix) or prefix.startswith("#")]
        if not own:
            self.say(f"no fragment {prefix!r} so far")
            return
        for track in own:
            self._show_track(track)

    do_info = do_show

    def _show_track(self, track: Track) -> None:
        r = self.replayer
        model = r.models.get((track.machine, track.serial))
        live = (r.core.inputs if track.machine == INPUT.name else r.core.outputs).get(
            track.serial) is model and model is not None
        status = "finished" if track.finished else ("in flight" if live else "gone")
        self.say(f"{track.machine} #{track.serial} {track.fragment or '(no fragment id)'}")
        self.say(f"  state: {track.state} ({status})")
        self.say("  history:")
        for (state, t), nxt in zip(track.states, [*track.states[1:], None], strict=True):
            spent = duration((nxt[1] if nxt else r.now) - t)
            note = "" if nxt else (" (terminal)" if track.finished else f" (for {spent} now)")
            self.say(f"    {self._t(t)}  {state}" + (f"  {spent}" if nxt else note))
        if isinstance(model, Input):
            self._show_input(model)
        elif isinstance(model, Output):
            self._show_output(model)
        pending = self._pending(track, model)
        self.say("  waiting for: " + ("; ".join(pending) if pending else "nothing"))

    def _show_input(self, inp: Input) -> None:
        r = self.replayer
        self.say(f"  delivery tag: {inp.tag}")
        if inp.desc is not None:
            self.say("  files:")
            for f, local in zip(inp.desc.files, _local_paths(r, inp), strict=False):
                self.say(f"    s3://{f.bucket}/{f.path} -> {local}")
            if not inp.desc.files:
                self.say("    (none)")
        outputs = [t for t in r.fragment_tracks() if t.machine == OUTPUT.name and isinstance(
            m := r.models.get((t.machine, t.serial)), Output) and inp.fragment_id
            and inp.fragment_id in m.predecessors]
        self.say("  outputs naming it: " + (", ".join(
            f"{t.label} {t.fragment[:12]} {t.state}"
            + (" (gates its ack)" if t.serial in _gates_of(r, inp) else "")
            for t in outputs) if outputs else "none"))
        if inp.taint:
            self.say(f"  tainted: {inp.taint[0]} ({inp.taint[1]})")
        if inp.failure:
            self.say(f"  download failure: {inp.failure.reason}: {inp.failure.error}")

    def _show_output(self, out: Output) -> None:
        self.say("  predecessors: " + (", ".join(p[:12] for p in out.predecessors) or "none"))
        self.say("  files:")
        for i, f in enumerate(out.files):
            remote = out.remote[i] if i < len(out.remote) else None
            target = f"s3://{remote.bucket}/{remote.path}" if remote else "(not uploaded)"
            self.say(f"    {f.path} -> {target}")
        if out.queue:
            self.say(f"  queue: {out.queue}")
        if out.failure:
            self.say(f"  upload failure: {out.failure.reason}: {out.failure.error}")

    def _pending(self, track: Track, model: Input | Output | None) -> list[str]:
        r = self.replayer
        if model is None or track.finished:
            return []
        waiting = []
        if isinstance(model, Input):
            if model.downloads_left:
                waiting.append(f"{model.downloads_left} download(s)")
            if model.state == "downloaded":
                waiting.append("a transformation connection to dispatch to")
            if model.state == "dispatched":
                waiting.append("done_with from the transformation")
            if model.unuploaded:
                waiting.append("upload of output(s) " + _serials(model.unuploaded))
            if model.unrecorded:
                waiting.append("confirms of output(s) " + _serials(model.unrecorded))
        elif model.uploads_left:
            waiting.append(f"{model.uploads_left} upload(s)")
        for pid, p in r.core.publishes.items():
            if p.owner == model.serial and (p.kind == "dead_letter") == isinstance(model, Input):
                waiting.append(f"broker confirm of publish {pid} ({p.kind} to {p.queue})")
        return waiting

    def do_list(self, arg: str) -> None:
        """list: the fragments in flight, with their state, age and time in that state."""
        r = self.replayer
        rows: list[tuple[str, Input | Output]] = [("input", m) for m in r.core.inputs.values()]
        rows += [("output", m) for m in r.core.outputs.values()]
        if self.fragment:
            keys = r.related(self.fragment)
            rows = [(k, m) for k, m in rows if (k, m.serial) in keys]
        self.say(f"step: {r.core.step.state}; {len(rows)} in flight at {self._t(r.now)}")
        for kind, m in rows:
            born, since = m.history[0][1], m.history[-1][1]
            self.say(f"  {kind:<6} #{m.serial:<4} {m.fragment_id[:12] or '(no id)':<12} "
                     f"{m.state:<14} age {duration(r.now - born):>8}, in state "
                     f"{duration(r.now - since)}")

    do_l = do_list

    def do_effects(self, arg: str) -> None:
        """effects: the effects of the last step (what the sidecar did next)."""
        step = self.replayer.last
        if step is None:
            self.say("nothing replayed yet")
            return
        effects = self._effects(step)
        self.say(f"effects of [{step.record.seq}]:" + (" none" if not effects else ""))
        for e in effects:
            self.say("  " + short(e, 400))

    def do_history(self, arg: str) -> None:
        """history [n]: the last n steps shown (default 10)."""
        n = _count(arg, 10)
        if n is None:
            self.say("usage: history [n]")
            return
        keys = self.replayer.related(self.fragment) if self.fragment else None
        for step in self.seen[-n:] if n else []:
            tr = ", ".join(f"#{t.serial} {t.dest}" for t in step.transitions
                           if keys is None or (t.machine, t.serial) in keys)
            self.say(f"[{step.record.seq}] {self._t(step.record.t)} "
                     f"{type(step.record.event).__name__}" + (f": {tr}" if tr else ""))
        if not self.seen:
            self.say("nothing replayed yet")

    def do_where(self, arg: str) -> None:
        """where: the position in the journal."""
        r = self.replayer
        seq = r.last.record.seq if r.last else None
        self.say(f"after event {seq if seq is not None else '(none)'}: {r.steps} of "
                 f"{r.total} replayed, step {r.core.step.state}, {r.core.in_flight} in flight")

    def do_quit(self, arg: str) -> bool:
        """quit: leave the debugger."""
        return True

    do_q = do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self.say("")
        return True

    def emptyline(self) -> bool:
        return False  # an empty line does nothing (pdb repeats; here that surprises)

    def default(self, line: str) -> None:
        self.say(f"unknown command {line.split()[0]!r}; try help")

    def precmd(self, line: str) -> str:
        if self.echo and line != "EOF":
            self.say(line.rstrip("\n"))
        return line


def _count(arg: str, default: int) -> int | None:
    arg = arg.strip()
    if not arg:
        return default
    return int(arg) if arg.isdigit() else None


def _serials(serials: set[int]) -> str:
    return ", ".join(f"#{s}" for s in sorted(serials))


def _gates_of(r: Replayer, inp: Input) -> set[int]:
    return {s for (machine, s), m in r.models.items()
            if machine == OUTPUT.name and isinstance(m, Output) and inp.serial in m.gates}


def _local_paths(r: Replayer, inp: Input) -> list[str]:
    from ..core.protocol import local_input_path

    assert inp.desc is not None
    return [local_input_path(r.config.volume, inp.desc, f) for f in inp.desc.files]


def run_debugger(replayer: Replayer, fragment: str = "", stdin: TextIO | None = None,
                 stdout: TextIO | None = None) -> int:
    debugger = Debugger(replayer, fragment, stdin, stdout)
    debugger.cmdloop()
    return 1 if replayer.divergence is not None else 0
