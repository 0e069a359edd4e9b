"""Property tests over recorded runs: random interleavings of what the shell reports, each
run recorded with the journal's Recorder and checked through the journal.

The fake world is test_core_replay.World (storage, broker and a pyterum transformation
that completes things in any order), made rougher: the same fragment is published twice,
and the transformation crashes and reconnects. The invariants:

* no input is acked before its done_with and before every output that named it and
  arrived before that done_with is recorded (uploaded, descriptor and lineage confirmed);
* every delivery is settled (acked or nacked) exactly once;
* every local file is deleted exactly once;
* once the stream has ended (the core exited), no fragment is left in a non-terminal state;
* the journal replays to the same transitions and effects, across rotated segments (whose
  checkpoints must equal the replayed state) and from each segment alone.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import event as note
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_replay import SPECS, Spec, World
from unit_driver import KILL_FRAME, fid, remote_body

from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell.journal import Recorder, list_segments, load
from sidecar.tools.replay import Replayer


@dataclass
class RoughWorld(World):
    conn: int = 1  # the transformation's tts connection; its fts is conn + 1
    crashes_left: int = 0
    duplicates_left: int = 0
    delivered: list = field(default_factory=list)
    ended: bool = False  # the transformation sent its kill and is gone
    next_tag: int = 100

    def actions(self) -> list[tuple]:
        acts = [a for a in super().actions() if a != ("connect",) or not self.ended]
        if self.connected and self.crashes_left and not self.ended:
            acts.append(("crash",))
        if self.delivered and self.duplicates_left and self.drv.core.consuming:
            acts.append(("duplicate",))
        return acts

    def run(self, action: tuple) -> None:
        kind = action[0]
        if kind == "deliver":
            tag, body = self.undelivered.popleft()
            self.delivered.append((tag, body))
            self.feed(ev.Delivered(tag, body))
        elif kind == "duplicate":  # the same descriptor published upstream once more:
            # of a fragment already acked if there is one (it is processed again), else of
            # the last one delivered (its copy meets the original in flight)
            self.duplicates_left -= 1
            self.next_tag += 1
            acked = {e.tag for e in fx_of(self.drv.effects, fx.Ack)}
            done = [body for tag, body in self.delivered if tag in acked]
            self.undelivered.append((self.next_tag, (done or [self.delivered[-1][1]])[0]))
        elif kind == "connect":
            self.connected = True
            self.feed(ev.Connected(self.conn, "tts"))
            self.feed(ev.Connected(self.conn + 1, "fts"))
        elif kind == "crash":  # frames not yet written die with the process
            self.crashes_left -= 1
            self.connected = False
            self.fts.clear()
            self.held = None
            self.feed(ev.Disconnected(self.conn, "tts"))
            self.feed(ev.Disconnected(self.conn + 1, "fts"))
            self.conn += 2
        elif kind == "frame":
            payload = self.fts.popleft()
            self.ended = self.ended or payload == KILL_FRAME
            self.feed(ev.FrameReceived(self.conn + 1, payload))
        else:
            super().run(action)


def ack_gating_violations(steps: list[tuple]) -> list[str]:
    """§16.8, read off a run's (event, clock, effects, transitions) steps rather than the
    core's bookkeeping."""
    born: dict[int, int] = {}
    fragment: dict[int, str] = {}
    done: dict[int, int] = {}
    acked: dict[int, int] = {}
    tag_of: dict[int, int] = {}
    outputs: list[tuple[int, int, list[str]]] = []  # (serial, step, predecessors)
    recorded: dict[int, int] = {}
    ack_steps: dict[int, list[int]] = {}
    for i, (event, _, out, transitions) in enumerate(steps):
        for e in out:  # a redelivery after a lost connection: the input takes its tag
            if isinstance(e, fx.Log) and e.code == "redelivery-adopted":
                serial = next(s for s, f in fragment.items() if f == e.fragment
                              and s not in acked)
                tag_of[serial] = event.tag
        for t in transitions:
            if t.machine == "input" and t.trigger == "new":
                born[t.serial], fragment[t.serial] = i, t.fragment
                tag_of[t.serial] = event.tag
            elif t.machine == "input" and t.dest == "processed":
                done[t.serial] = i
            elif t.machine == "input" and t.dest == "acked":
                acked[t.serial] = i
            elif t.machine == "output" and t.trigger == "new":
                preds = json.loads(event.payload)["metadata"]["predecessors"]
                outputs.append((t.serial, i, preds))
            elif t.machine == "output" and t.dest == "recorded":
                recorded[t.serial] = i
        for e in out:
            if isinstance(e, fx.Ack):
                ack_steps.setdefault(e.tag, []).append(i)
    problems = []
    for serial, a in acked.items():
        if a not in ack_steps.get(tag_of[serial], []):
            problems.append(f"input #{serial}: acked state without its Ack at step {a}")
        d = done.get(serial)
        if d is None or d > a:
            problems.append(f"input #{serial}: acked at {a} before done_with ({d})")
            continue
        for out_serial, s, preds in outputs:
            if born[serial] <= s <= d and fragment[serial] in preds:
                r = recorded.get(out_serial)
                if r is None or r > a:
                    problems.append(f"input #{serial} acked at {a}, its output #{out_serial} "
                                    f"(step {s}) recorded at {r}")
    return problems


def check_the_run(world: RoughWorld, directory: str) -> None:
    drv = world.drv
    effects = drv.effects

    # the stream ended and nothing is left half-way
    assert world.exited, f"stuck: {drv.core.step.state}, {len(drv.core.inputs)} inputs"
    assert drv.core.inputs == {} and drv.core.outputs == {} and drv.core.publishes == {}
    [exit_effect] = fx_of(effects, fx.Exit)
    assert exit_effect.code in (0, 3)  # 3: the transformation did not come back in time

    # every delivery settled exactly once; acks only while the transformation lives
    delivered = [e.tag for e, _, _, _ in drv.journal if isinstance(e, ev.Delivered)]
    settled = [e.tag for e in fx_of(effects, fx.Ack, fx.Nack)]
    assert Counter(settled) == Counter(delivered)
    if exit_effect.code == 0:
        assert fx_of(effects, fx.Nack) == []

    assert ack_gating_violations(drv.journal) == []
    drv.assert_files_deleted_once()

    # the journal replays: rotated segments, their checkpoints, and each segment alone
    journal = load(directory)
    assert journal.count == len(drv.journal)
    replayer = Replayer(journal)
    assert replayer.run(), replayer.divergence and replayer.divergence.describe()
    assert [t for t in replayer.fragment_tracks() if not t.finished] == []
    assert replayer.exit == exit_effect
    for _, _, path in list_segments(directory):
        alone = Replayer(load(path))
        assert alone.run(), alone.divergence and alone.divergence.describe()


def fx_of(effects: list, *kinds: type) -> list:
    return [e for e in effects if isinstance(e, kinds)]


@settings(max_examples=120, deadline=None)
@given(specs=SPECS, crashes=st.integers(0, 2), duplicates=st.integers(0, 2),
       segment_bytes=st.sampled_from([1500, 6000, 1 << 30]), data=st.data())
def test_rough_interleavings_keep_the_invariants_and_replay(
        specs: list[Spec], crashes: int, duplicates: int, segment_bytes: int,
        data: st.DataObject) -> None:
    ids = [fid(ch) for ch in "abcd"[: len(specs)]]
    world = RoughWorld(dict(zip(ids, specs, strict=True)), crashes_left=crashes,
                       duplicates_left=duplicates)
    for tag, (f, s) in enumerate(zip(ids, specs, strict=True), start=10):
        world.undelivered.append((tag, remote_body(f, [f"{i}.in" for i in range(s.files)])))
    with tempfile.TemporaryDirectory() as directory:
        recorder = Recorder(directory, world.drv.core, max_bytes=segment_bytes, keep=10_000)
        world.drv.observers.append(recorder)
        world.feed(ev.BrokerReady())
        for _ in range(3000):
            acts = world.actions()
            if world.exited or not acts:
                break
            world.run(acts[data.draw(st.integers(0, len(acts) - 1), label="action")])
        recorder.close()
        check_the_run(world, directory)
        codes = {e.code for e in fx_of(world.drv.effects, fx.Log)}
        for code in sorted(codes & {"redispatched", "duplicate-delivery", "redelivered",
                                    "transformation-lost", "transformation-disconnected"}):
            note(code)  # shown by --hypothesis-show-statistics: the paths were taken
        dispatched = Counter(t.fragment for t in world.drv.transitions if t.dest == "dispatched"
                             and t.trigger == "dispatch")
        if any(n > 1 for n in dispatched.values()):
            note("a fragment processed twice (duplicate after its twin was acked)")
        note(f"exit {world.drv.effects[-1].code}")
        note("segments: " + ("several" if recorder.segment > 1 else "one"))


def _ack_moved(journal: list[tuple], to: int) -> list[tuple]:
    """The same run with the Ack (and its transition) moved to step ``to``."""
    moved = list(journal)
    at = next(i for i, (_, _, out, _) in enumerate(moved) if fx_of(out, fx.Ack))
    event, t, out, trs = moved[at]
    acks, ack_tr = fx_of(out, fx.Ack), [x for x in trs if x.dest == "acked"]
    moved[at] = (event, t, [e for e in out if e not in acks], [x for x in trs
                                                                 if x not in ack_tr])
    event, t, out, trs = moved[to]
    moved[to] = (event, t, out + acks, trs + ack_tr)
    return moved


def test_the_ack_gating_check_catches_an_early_ack() -> None:
    """The invariant above is not vacuous: an ack moved before the input's done_with, or
    between the done_with and its output's lineage confirm, is reported."""
    world = RoughWorld({fid("a"): Spec(files=1, before=1, after=0, pair=False)})
    world.undelivered.append((10, remote_body(fid("a"), ["0.in"])))
    world.feed(ev.BrokerReady())
    while not world.exited and world.actions():
        world.run(world.actions()[0])  # a fixed order: output, done_with, upload, confirms
    journal = world.drv.journal
    assert ack_gating_violations(journal) == []

    def step_where(predicate) -> int:
        return next(i for i, (_, _, _, trs) in enumerate(journal)
                    if any(predicate(t) for t in trs))

    created = step_where(lambda t: t.machine == "output" and t.trigger == "new")
    done = step_where(lambda t: t.dest == "processed")
    recorded = step_where(lambda t: t.dest == "recorded")
    assert created < done < recorded - 1
    [early] = ack_gating_violations(_ack_moved(journal, created))
    assert early == f"input #1: acked at {created} before done_with ({done})"
    [unconfirmed] = ack_gating_violations(_ack_moved(journal, recorded - 1))
    assert unconfirmed == (f"input #1 acked at {recorded - 1}, its output #2 (step "
                           f"{created}) recorded at {recorded}")
