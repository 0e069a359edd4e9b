"""Core: determinism (the same events give the same effects and transitions, so a journal
replays) and a randomised whole-run simulation whose invariants must hold in every order
the shell could report completions in."""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from unit_driver import (
    FTS,
    KILL_FRAME,
    LINEAGE_QUEUE,
    OUT_QUEUE,
    TTS,
    Driver,
    done_with,
    fid,
    make_config,
    of,
    pyterum_output,
    remote_body,
)

from sidecar.core import Core
from sidecar.core import effects as fx
from sidecar.core import events as ev

A, B, C, D = fid("a"), fid("b"), fid("c"), fid("d")


def replay(journal: list, **overrides: object) -> list[tuple[list, list]]:
    core = Core(make_config(**overrides))
    return [(core.handle(event, at), list(core.transitions)) for event, at, _, _ in journal]


def busy_run() -> Driver:
    """A run touching most rules: gating, N→1, a dead letter, a download failure, a
    refused publish, a crash with a reconnect, the end-of-stream chain."""
    drv = Driver()
    drv.start()
    drv.connect()
    drv.ready_input(1, A)
    drv.ready_input(2, B)
    drv.deliver(3, b"not json")
    [d] = drv.deliver_fragment(4, C)
    drv.feed(ev.DownloadFailed(d.input_id, 0, "missing-object", "gone", False))
    merged = drv.output([A, B], ["m.jpg"])
    solo = drv.output([A], ["s.jpg"])
    drv.done(A)
    drv.disconnect()
    drv.after(5, ev.Connected(3, "tts"))
    drv.feed(ev.Connected(4, "fts"))
    drv.done(B, conn=4)
    pubs = of(drv.upload(merged + solo), fx.Publish)
    drv.reject(pubs[0])
    for p in of(drv.effects, fx.Publish):
        if p.publish_id != pubs[0].publish_id:
            for lineage in of(drv.confirm(p), fx.Publish):
                drv.confirm(lineage)
    drv.frame(b"garbage", conn=4)
    drv.deliver_fragment(5, D)
    drv.feed(ev.UpstreamFinished())
    drv.feed(ev.QueueInspected(2))
    drv.after(1)
    drv.feed(ev.QueueInspected(0))
    drv.feed(ev.ConsumerStopped())
    drv.download(D)
    drv.done(D, conn=4)
    drv.kill(conn=4)
    drv.feed(ev.Disconnected(4, "fts"))
    return drv


def test_the_busy_run_ends_cleanly() -> None:
    drv = busy_run()
    assert [e.code for e in of(drv.effects, fx.Exit)] == [0]
    assert sorted(a.tag for a in of(drv.effects, fx.Ack)) == [1, 2, 3, 4, 5]
    assert of(drv.effects, fx.Nack) == []
    drv.assert_files_deleted_once()


def test_same_events_give_the_same_effects_and_transitions() -> None:
    drv = busy_run()
    first, second = replay(drv.journal), replay(drv.journal)
    assert first == second
    assert first == [(out, ts) for _, _, out, ts in drv.journal]
    assert sum(len(ts) for _, ts in first) > 30  # the run really did something


def test_two_identical_runs_are_identical() -> None:
    one, two = busy_run(), busy_run()
    assert one.effects == two.effects
    assert one.transitions == two.transitions
    assert [(e, t) for e, t, _, _ in one.journal] == [(e, t) for e, t, _, _ in two.journal]


def test_the_clock_only_matters_through_deadlines() -> None:
    """Shifting every reading by a constant changes nothing (the core has no wall clock)."""
    drv = busy_run()
    shifted = [(e, t + 1000.0, o, ts) for e, t, o, ts in drv.journal]
    assert replay(shifted) == replay(drv.journal)


# --- a randomised whole run ------------------------------------------------------------------


@dataclass
class Spec:
    files: int
    before: int  # outputs sent before done_with
    after: int  # outputs sent after done_with
    pair: bool  # held back and merged with the next fragment into one N→1 output


@dataclass
class World:
    """A fake shell, broker, storage and pyterum transformation around one Core."""

    specs: dict[str, Spec]
    drv: Driver = field(default_factory=Driver)
    undelivered: deque = field(default_factory=deque)
    completions: list = field(default_factory=list)
    publishes: dict = field(default_factory=dict)  # publish id -> (Publish, kind, owner)
    rejected: Counter = field(default_factory=Counter)
    fts: deque = field(default_factory=deque)
    held: str | None = None  # a fragment kept back to be merged with the next one
    inspect_pending: bool = False
    stop_pending: bool = False
    upstream_sent: bool = False
    connected: bool = False
    exited: bool = False
    names: int = 0
    kinds: dict = field(default_factory=dict)  # publish id -> (kind, output serial)

    def feed(self, event: ev.Event, at: float | None = None) -> None:
        out = self.drv.feed(event, at)
        for e in out:
            if isinstance(e, fx.DownloadFile):
                self.completions.append(ev.FileDownloaded(e.input_id, e.index, 1))
            elif isinstance(e, fx.UploadFile):
                self.completions.append(ev.FileUploaded(e.output_id, e.index, 1))
            elif isinstance(e, fx.Publish):
                pending = self.drv.core.publishes[e.publish_id]
                self.publishes[e.publish_id] = e
                self.kinds[e.publish_id] = (pending.kind, pending.owner)
            elif isinstance(e, fx.InspectQueue):
                self.inspect_pending = True
            elif isinstance(e, fx.StopConsuming):
                self.stop_pending = True
            elif isinstance(e, fx.SendFrame):
                self.transformation_receives(e.payload)
            elif isinstance(e, fx.Exit):
                self.exited = True

    def output(self, preds: list[str]) -> bytes:
        self.names += 1
        return pyterum_output(preds, [(f"{self.names}.out", f"/vol/output/{self.names}.out")])

    def own_frames(self, fragment: str) -> list[bytes]:
        s = self.specs[fragment]
        return ([self.output([fragment]) for _ in range(s.before)] + [done_with(fragment)]
                + [self.output([fragment]) for _ in range(s.after)])

    def transformation_receives(self, payload: bytes) -> None:
        if payload == KILL_FRAME:
            if self.held:
                self.fts.extend(self.own_frames(self.held))
                self.held = None
            self.fts.append(KILL_FRAME)
            return
        fragment = json.loads(payload)["metadata"]["fragment_id"]
        if self.held:
            held, self.held = self.held, None
            self.fts.append(self.output([held, fragment]))
            self.fts.extend(self.own_frames(held))
            self.fts.extend(self.own_frames(fragment))
        elif self.specs[fragment].pair:
            self.held = fragment
        else:
            self.fts.extend(self.own_frames(fragment))

    def actions(self) -> list[tuple]:
        acts: list[tuple] = []
        if self.undelivered:
            acts.append(("deliver",))
        if not self.connected:
            acts.append(("connect",))
        if not self.upstream_sent:
            acts.append(("upstream",))
        if self.inspect_pending:
            acts.append(("inspected",))
        if self.stop_pending:
            acts.append(("stopped",))
        if self.fts:
            acts.append(("frame",))
        if self.drv.core.next_deadline() is not None:
            acts.append(("tick",))
        acts += [("complete", i) for i in range(len(self.completions))]
        for pid, p in self.publishes.items():
            acts.append(("confirm", pid))
            if self.rejected[(p.queue, p.body)] < 2:
                acts.append(("reject", pid))
        return acts

    def run(self, action: tuple) -> None:
        kind = action[0]
        if kind == "deliver":
            tag, body = self.undelivered.popleft()
            self.feed(ev.Delivered(tag, body))
        elif kind == "connect":
            self.connected = True
            self.feed(ev.Connected(TTS, "tts"))
            self.feed(ev.Connected(FTS, "fts"))
        elif kind == "upstream":
            self.upstream_sent = True
            self.feed(ev.UpstreamFinished())
        elif kind == "inspected":
            self.inspect_pending = False
            self.feed(ev.QueueInspected(len(self.undelivered)))
        elif kind == "stopped":
            self.stop_pending = False
            self.feed(ev.ConsumerStopped())
        elif kind == "frame":
            self.feed(ev.FrameReceived(FTS, self.fts.popleft()))
        elif kind == "tick":
            self.feed(ev.Tick(), at=max(self.drv.clock, self.drv.core.next_deadline()))
        elif kind == "complete":
            self.feed(self.completions.pop(action[1]))
        elif kind == "confirm":
            del self.publishes[action[1]]
            self.feed(ev.PublishConfirmed(action[1]))
        elif kind == "reject":
            p = self.publishes.pop(action[1])
            self.rejected[(p.queue, p.body)] += 1
            self.feed(ev.PublishRejected(action[1], "nack"))


SPECS = st.lists(st.builds(Spec, files=st.integers(0, 2), before=st.integers(0, 2),
                           after=st.integers(0, 1), pair=st.booleans()),
                 min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(specs=SPECS, data=st.data())
def test_any_completion_order_ends_with_every_input_acked_once(specs: list[Spec],
                                                              data: st.DataObject) -> None:
    ids = [fid(ch) for ch in "abcd"[: len(specs)]]
    world = World(dict(zip(ids, specs, strict=True)))
    for tag, (f, s) in enumerate(zip(ids, specs, strict=True), start=10):
        world.undelivered.append((tag, remote_body(f, [f"{i}.in" for i in range(s.files)])))
    world.feed(ev.BrokerReady())
    for _ in range(2000):
        acts = world.actions()
        if world.exited or not acts:
            break
        world.run(acts[data.draw(st.integers(0, len(acts) - 1), label="action")])
    drv = world.drv
    effects = drv.effects

    # the run finished, cleanly
    assert world.exited, f"stuck: {drv.core.step.state}, {len(drv.core.inputs)} inputs"
    assert isinstance(effects[-1], fx.Exit) and effects[-1].code == 0
    assert [e for e in of(effects, fx.Log) if e.level == "error"] == []
    assert drv.core.inputs == {} and drv.core.outputs == {} and drv.core.publishes == {}
    assert sorted(a.tag for a in of(effects, fx.Ack)) == list(range(10, 10 + len(specs)))
    assert of(effects, fx.Nack) == []
    drv.assert_files_deleted_once()

    # every fragment reached the transformation once, and the kill only after the last
    sent = [f.payload for f in of(effects, fx.SendFrame)]
    assert sent[-1] == KILL_FRAME and sent.count(KILL_FRAME) == 1
    assert sorted(json.loads(s)["metadata"]["fragment_id"] for s in sent[:-1]) == sorted(ids)

    # every output was published, then its lineage, each exactly once confirmed
    outputs = {u.output_id for u in of(effects, fx.UploadFile)}
    confirmed = [world.kinds[e.publish_id] for e, _, _, _ in drv.journal
                 if isinstance(e, ev.PublishConfirmed)]
    assert sorted(o for k, o in confirmed if k == "descriptor") == sorted(outputs)
    assert sorted(o for k, o in confirmed if k == "lineage") == sorted(outputs)
    assert len(outputs) == world.names  # every output the transformation sent
    for p in of(effects, fx.Publish):
        assert p.queue in (OUT_QUEUE, LINEAGE_QUEUE)

    # §16.8: an ack comes after the input's done_with and after the lineage confirm of
    # every output that named it and arrived before that done_with
    step_of: dict = {}
    for i, (event, _, out, _) in enumerate(drv.journal):
        for a in of(out, fx.Ack):
            step_of[("ack", a.tag)] = i
        if isinstance(event, ev.PublishConfirmed):
            kind, owner = world.kinds[event.publish_id]
            if kind == "lineage":
                step_of[("recorded", owner)] = i
        if isinstance(event, ev.FrameReceived) and event.payload != KILL_FRAME:
            msg = json.loads(event.payload)
            if "files" in msg:
                [u] = {x.output_id for x in of(out, fx.UploadFile)}
                step_of[("output", u)] = (i, msg["metadata"]["predecessors"])
            else:
                step_of[("done", msg["fragment_id"])] = i
    for tag, f in enumerate(ids, start=10):
        ack = step_of[("ack", tag)]
        done = step_of[("done", f)]
        assert ack >= done
        for key, value in step_of.items():
            if key[0] == "output" and f in value[1] and value[0] < done:
                assert ack >= step_of[("recorded", key[1])]

    # and the same events replay to the same effects
    assert replay(drv.journal) == [(out, ts) for _, _, out, ts in drv.journal]
