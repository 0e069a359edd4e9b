"""The replay engine: the core run offline on a journal's recorded events, checked against them.

No broker, no storage, no transformation: the core is rebuilt from the first segment's
header (its ``CoreConfig``) and checkpoint (its state), then fed every recorded event with
its recorded clock reading. After each event the transitions and effects must equal the
recorded ones, and at each later segment the core's state must equal that segment's
checkpoint. The first difference is a ``Divergence``.

``Replayer`` advances one event at a time and keeps every fragment's track (the states it
went through and when) and model. ``iterum-sidecar replay`` (sidecar/tools/replay.py) runs
it to the end and prints the timeline; the step-through debugger (sidecar/tools/debugger.py)
drives it one command at a time. Both import this module, neither imports the other's
callers, so the tools have no import cycle.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from states import INPUT, OUTPUT, STEP

from ..core import Core, Input, Output, Transition, codec
from ..core import effects as fx
from ..core import events as ev
from ..core.snapshot import SnapshotError, config_from_json, upgrade
from ..shell.journal import Journal, Record, Segment

TERMINAL = {INPUT.name: INPUT.terminal, OUTPUT.name: OUTPUT.terminal, STEP.name: STEP.terminal}


@dataclass
class Track:
    """One state machine's path: (state, time entered), in order."""

    machine: str
    serial: int
    fragment: str
    states: list[tuple[str, float]] = field(default_factory=list)
    dropped: bool = False  # forgotten outside a terminal state: a duplicate delivery's copy

    @property
    def state(self) -> str:
        return self.states[-1][0]

    @property
    def finished(self) -> bool:
        return self.dropped or self.state in TERMINAL[self.machine]

    @property
    def label(self) -> str:
        return f"{self.machine} #{self.serial}"


@dataclass
class Step:
    """One replayed event: the record, and what the core did with it this time."""

    index: int  # 0-based position in the journal
    record: Record
    transitions: list[Transition]
    effects: list[fx.Effect]
    concerns: set[tuple[str, int]] = field(default_factory=set)  # models it touched


@dataclass
class Divergence:
    seq: int
    t: float
    event: ev.Event | None
    problem: str  # what differs
    expected: list[Any] = field(default_factory=list)
    actual: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"replay DIVERGED at seq {self.seq} (t={self.t!r}): {self.problem}"]
        if self.event is not None:
            lines.append(f"  event:    {short(self.event, 300)}")
        if self.expected or self.actual:
            width = max(len(self.expected), len(self.actual))
            for i in range(width):
                want = self.expected[i] if i < len(self.expected) else "(nothing)"
                got = self.actual[i] if i < len(self.actual) else "(nothing)"
                mark = "  " if want == got else "≠ "
                lines.append(f"{mark}recorded: {short(want, 300)}")
                lines.append(f"{mark}replayed: {short(got, 300)}")
        return "\n".join(lines)


class Replayer:
    def __init__(self, journal: Journal):
        self.journal = journal
        first = journal.segments[0]
        self.config = config_from_json(first.header["config"])
        self.core = Core.restore(self.config, first.checkpoint)
        self.tracks: dict[tuple[str, int], Track] = {}
        self.models: dict[tuple[str, int], Input | Output] = {}
        self.kinds: Counter[str] = Counter()
        self.divergence: Divergence | None = None
        self.steps = 0
        self.last: Step | None = None
        self.first_t: float | None = None
        self.exit: fx.Exit | None = None
        self.tags: dict[int, int] = {}  # delivery tag -> input serial
        self.publishers: dict[int, tuple[str, int]] = {}  # publish id -> owning model
        self._records: Iterator[tuple[Segment, Record]] = self._walk()
        self._adopt_core_models()
        step_history = self.core.step.history or [(self.core.step.state, self.core.now)]
        self.tracks[(STEP.name, 0)] = Track(STEP.name, 0, "", list(step_history))

    @property
    def now(self) -> float:
        return self.core.now

    @property
    def total(self) -> int:
        return self.journal.count

    @property
    def finished(self) -> bool:
        return self.divergence is not None or self.steps >= self.total

    def _walk(self) -> Iterator[tuple[Segment, Record]]:
        for number, segment in enumerate(self.journal.segments):
            if number > 0 and not self._checkpoint_matches(segment):
                return
            for record in segment.records:
                yield segment, record

    def _checkpoint_matches(self, segment: Segment) -> bool:
        mine = json.loads(json.dumps(self.core.snapshot()))
        try:
            theirs = upgrade(segment.checkpoint)  # recorded in an older format
        except SnapshotError:
            theirs = segment.checkpoint
        if mine == theirs:
            return True
        differs = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        self.divergence = Divergence(
            segment.after, self.core.now, None,
            f"the core's state differs from the checkpoint at the start of {segment.path} "
            f"(fields: {', '.join(differs)})")
        return False

    def _adopt_core_models(self) -> None:
        """Tracks for the models in flight at the checkpoint (their history so far)."""
        for table, machine in ((self.core.inputs, INPUT.name), (self.core.outputs, OUTPUT.name)):
            for serial, model in table.items():
                self.models[(machine, serial)] = model
                if isinstance(model, Input):
                    self.tags[model.tag] = serial
                self.tracks[(machine, serial)] = Track(machine, serial, _fragment(model),
                                                       list(model.history))

    def step(self) -> Step | None:
        """Replay the next event; None at the end or once replay has diverged."""
        if self.divergence is not None:
            return None
        try:
            _, record = next(self._records)
        except StopIteration:
            return None
        if self.first_t is None:
            self.first_t = record.t
        before = self._event_concerns(record.event)
        try:
            effects = self.core.handle(record.event, record.t)
        except Exception as err:  # a tampered or foreign journal can make the core fail
            self.divergence = Divergence(record.seq, record.t, record.event,
                                         f"the core raised {type(err).__name__}: {err}")
            return None
        transitions = list(self.core.transitions)
        step = Step(self.steps, record, transitions, effects, before)
        self.steps += 1
        self.kinds[type(record.event).__name__] += 1
        self._follow(step)
        self.last = step
        self._check(step)
        return step

    def run(self) -> bool:
        """Replay to the end; True when everything matched."""
        while self.step() is not None:
            pass
        return self.divergence is None

    def _event_concerns(self, e: ev.Event) -> set[tuple[str, int]]:
        """The models an event is about, looked up before the core forgets them."""
        if isinstance(e, ev.FileDownloaded | ev.DownloadFailed):
            return {(INPUT.name, e.input_id)}
        if isinstance(e, ev.FileUploaded | ev.UploadFailed):
            return {(OUTPUT.name, e.output_id)}
        if isinstance(e, ev.PublishConfirmed | ev.PublishRejected):
            owner = self.publishers.get(e.publish_id)
            return {owner} if owner else set()
        return set()

    def _follow(self, step: Step) -> None:
        t = step.record.t
        for tr in step.transitions:
            key = (tr.machine, tr.serial)
            if tr.machine != STEP.name:
                step.concerns.add(key)
            if tr.trigger == "new" or key not in self.tracks:
                self.tracks[key] = Track(tr.machine, tr.serial, tr.fragment, [(tr.dest, t)])
                table = self.core.inputs if tr.machine == INPUT.name else self.core.outputs
                model = table.get(tr.serial) if tr.machine != STEP.name else None
                if model is not None:
                    self.models[key] = model
                    if isinstance(model, Input):
                        self.tags[model.tag] = model.serial
            else:
                self.tracks[key].states.append((tr.dest, t))
        for tr in step.transitions:
            if tr.trigger == "new" and tr.machine == INPUT.name and (
                    tr.serial not in self.core.inputs and tr.dest not in INPUT.terminal):
                self.tracks[(tr.machine, tr.serial)].dropped = True
        for e in step.effects:
            if isinstance(e, fx.Exit):
                self.exit = e
            elif isinstance(e, fx.Publish):
                pending = self.core.publishes.get(e.publish_id)
                if pending is not None:
                    machine = INPUT.name if pending.kind == "dead_letter" else OUTPUT.name
                    self.publishers[e.publish_id] = (machine, pending.owner)
                    step.concerns.add((machine, pending.owner))
            elif isinstance(e, fx.DownloadFile):
                step.concerns.add((INPUT.name, e.input_id))
            elif isinstance(e, fx.UploadFile):
                step.concerns.add((OUTPUT.name, e.output_id))
            elif isinstance(e, fx.Ack | fx.Nack) and e.tag in self.tags:
                step.concerns.add((INPUT.name, self.tags[e.tag]))

    def related(self, prefix: str) -> set[tuple[str, int]]:
        """The models of the fragment(s) whose id starts with ``prefix`` (``#N``: the model
        with serial N), and the outputs that name such a fragment as a predecessor."""
        if prefix.startswith("#") and prefix[1:].isdigit():
            serial = int(prefix[1:])
            return {k for k in self.tracks if k[1] == serial and k[0] != STEP.name}
        return {(t.machine, t.serial) for t in self.fragment_tracks(prefix)}

    def step_touches(self, step: Step, prefix: str,
                     related: set[tuple[str, int]] | None = None) -> bool:
        keys = self.related(prefix) if related is None else related
        if step.concerns & keys:
            return True
        return any(isinstance(e, fx.Log) and e.fragment and e.fragment.startswith(prefix)
                   for e in step.effects)

    def effect_touches(self, e: fx.Effect, keys: set[tuple[str, int]], prefix: str) -> bool:
        """Whether an effect is about one of ``keys`` (the models of fragment ``prefix``)."""
        if isinstance(e, fx.DownloadFile):
            return (INPUT.name, e.input_id) in keys
        if isinstance(e, fx.UploadFile):
            return (OUTPUT.name, e.output_id) in keys
        if isinstance(e, fx.Publish):
            return self.publishers.get(e.publish_id) in keys
        if isinstance(e, fx.Ack | fx.Nack):
            return (INPUT.name, self.tags.get(e.tag, -1)) in keys
        if isinstance(e, fx.Log):
            return bool(e.fragment) and e.fragment.startswith(prefix)
        if isinstance(e, fx.SendFrame):
            return prefix.encode() in e.payload
        if isinstance(e, fx.DeleteFiles):
            return any(prefix in p for p in e.paths + e.dirs)
        return isinstance(e, fx.Exit)

    def _check(self, step: Step) -> None:
        record = step.record
        actual_tr = [codec.encode_transition(t) for t in step.transitions]
        if actual_tr != record.transitions:
            self.divergence = Divergence(
                record.seq, record.t, record.event, "the transitions differ",
                [_tr_text(t) for t in record.transitions], [_tr_text(t) for t in actual_tr])
            return
        actual = [codec.encode_effect(e) for e in step.effects]
        if actual != record.effects:
            self.divergence = Divergence(record.seq, record.t, record.event,
                                         "the effects differ",
                                         [_fx_text(e) for e in record.effects],
                                         [_fx_text(e) for e in actual])

    # --- questions for the timeline, the summary and the debugger -------------------------

    def fragment_tracks(self, prefix: str = "") -> list[Track]:
        """Input and output tracks, in the order they began; with ``prefix``, those of that
        fragment id and the outputs that name it as a predecessor."""
        tracks = [t for t in self.tracks.values() if t.machine != STEP.name]
        if prefix.startswith("#") and prefix[1:].isdigit():
            return [t for t in tracks if t.serial == int(prefix[1:])]
        if prefix:
            tracks = [t for t in tracks if t.fragment.startswith(prefix)
                      or self._names_predecessor(t, prefix)]
        return sorted(tracks, key=lambda t: (t.states[0][1], t.serial))

    def _names_predecessor(self, track: Track, prefix: str) -> bool:
        model = self.models.get((track.machine, track.serial))
        return isinstance(model, Output) and any(p.startswith(prefix)
                                                 for p in model.predecessors)


def _fragment(model: Any) -> str:
    return model.fragment_id if isinstance(model, Input | Output) else ""


def _tr_text(t: list[Any]) -> str:
    machine, serial, fragment, trigger, source, dest = t
    who = f"{machine} #{serial}" + (f" {fragment[:12]}" if fragment else "")
    return f"{who}: {source or '(new)'} --{trigger}--> {dest}"


def _fx_text(data: dict[str, Any]) -> str:
    """A recorded-form effect on one line: Kind(field=value, ...), digests shortened."""
    parts = []
    for key, v in data.items():
        if key == "kind":
            continue
        if isinstance(v, dict) and "sha256" in v:
            v = f"<sha256 {v['sha256']}, {v['len']} bytes>"
        parts.append(f"{key}={v}" if isinstance(v, str) else f"{key}={v!r}")
    return f"{data.get('kind')}(" + ", ".join(parts) + ")"


def short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else _brief(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _brief(value: Any) -> str:
    """An event or effect on one line, bytes shown as text when they are text."""
    if isinstance(value, ev.Event | fx.Effect):
        parts = []
        for key, v in codec.encode(value).items():
            if key != "kind":
                parts.append(f"{key}={v!r}" if not isinstance(v, str) else f"{key}={v}")
        return f"{type(value).__name__}(" + ", ".join(parts) + ")"
    return repr(value)


# --- durations on one line, for the timeline and the debugger --------------------


def duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"
