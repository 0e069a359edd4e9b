"""Property test: random interleavings of a run in which the broker connection is lost and
comes back, against a small model of RabbitMQ (docs/reliability.md, case 3).

The model broker: delivery tags are per channel and restart at 1 on every new connection;
on a loss every unacked delivery is requeued (redelivered) and every unconfirmed publish has
an unknown fate (it may or may not have reached its queue); acking or nacking a tag the
current channel did not deliver is a channel error. The transformation is test_core_replay's
World, with output file names that depend only on the predecessors (a deterministic
transformation). The invariants:

* every message is acked exactly once, always on a tag of the current channel;
* nothing is published while the broker is away;
* every output the transformation made reaches the output queue, and every message id on it
  has exactly one body (re-publishing is allowed, different bodies are not);
* every local file is deleted exactly once; the journal replays.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter, deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_replay import SPECS, World
from test_journal_properties import ack_gating_violations
from unit_driver import (
    FTS,
    KILL_FRAME,
    LINEAGE_QUEUE,
    OUT_QUEUE,
    TTS,
    fid,
    pyterum_output,
    remote_body,
)

from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell.journal import Recorder, load
from sidecar.tools.replay import Replayer


@dataclass
class BrokerWorld(World):
    bodies: list = field(default_factory=list)  # message number -> body
    ready_q: deque = field(default_factory=deque)  # message numbers ready in the queue
    delivered_before: set = field(default_factory=set)
    unacked: dict = field(default_factory=dict)  # tag of the current channel -> message
    next_tag: int = 0
    up: bool = False
    consuming: bool = False
    losses_left: int = 0
    acked: Counter = field(default_factory=Counter)
    queue_bodies: dict = field(default_factory=dict)  # message id -> set of bodies landed
    problems: list = field(default_factory=list)
    made: Counter = field(default_factory=Counter)  # outputs made: predecessors -> count

    def feed(self, event: ev.Event, at: float | None = None) -> None:
        out = self.drv.feed(event, at)
        for e in out:
            if isinstance(e, fx.Publish):
                if not self.up:
                    self.problems.append(f"publish while the broker is away: {e}")
                    continue
                self.publishes[e.publish_id] = e
            elif isinstance(e, fx.Ack | fx.Nack):
                message = self.unacked.pop(e.tag, None)
                if message is None or not self.up:
                    self.problems.append(f"{e} on a tag this channel did not deliver")
                elif isinstance(e, fx.Ack):
                    self.acked[message] += 1
                else:
                    self.ready_q.appendleft(message)
            elif isinstance(e, fx.StartConsuming):
                self.consuming = True
            elif isinstance(e, fx.StopConsuming):
                self.consuming = False
                self.stop_pending = True
            elif isinstance(e, fx.InspectQueue):
                self.inspect_pending = True
            elif isinstance(e, fx.DownloadFile):
                self.completions.append(ev.FileDownloaded(e.input_id, e.index, 1))
            elif isinstance(e, fx.UploadFile):
                self.completions.append(ev.FileUploaded(e.output_id, e.index, 1))
            elif isinstance(e, fx.SendFrame):
                self.transformation_receives(e.payload)
            elif isinstance(e, fx.Exit):
                self.exited = True

    def output(self, preds: list[str]) -> bytes:
        """A deterministic transformation: the name depends on the predecessors only."""
        key = tuple(sorted(preds))
        n = self.made[key]
        self.made[key] += 1
        name = "-".join(p[:4] for p in key) + f"-{n}.out"
        return pyterum_output(preds, [(name, f"/vol/output/{name}")])

    def transformation_receives(self, payload: bytes) -> None:
        if payload != KILL_FRAME:
            fragment = json.loads(payload)["metadata"]["fragment_id"]
            for key in [k for k in self.made if fragment in k]:
                del self.made[key]  # processed again from the start
        super().transformation_receives(payload)

    def land(self, p: fx.Publish) -> None:
        if p.queue in (OUT_QUEUE, LINEAGE_QUEUE):
            self.queue_bodies.setdefault((p.queue, p.message_id), set()).add(p.body)

    def actions(self) -> list[tuple]:
        acts: list[tuple] = []
        if self.up and self.consuming and self.ready_q and len(self.unacked) < 4:
            acts.append(("deliver",))
        if not self.connected:
            acts.append(("connect",))
        if not self.upstream_sent:
            acts.append(("upstream",))
        if self.up and self.inspect_pending:
            acts.append(("inspected",))
        if self.up and self.stop_pending:
            acts.append(("stopped",))
        if self.fts:
            acts.append(("frame",))
        if self.drv.core.next_deadline() is not None:
            acts.append(("tick",))
        acts += [("complete", i) for i in range(len(self.completions))]
        acts += [("confirm", pid) for pid in self.publishes]
        if self.up and self.losses_left:
            acts.append(("lose", True))
            acts.append(("lose", False))
        if not self.up:
            acts.append(("ready",))
        return acts

    def run(self, action: tuple) -> None:
        kind = action[0]
        if kind == "deliver":
            message = self.ready_q.popleft()
            self.next_tag += 1
            self.unacked[self.next_tag] = message
            redelivered = message in self.delivered_before
            self.delivered_before.add(message)
            self.feed(ev.Delivered(self.next_tag, self.bodies[message], redelivered))
        elif kind == "inspected":
            self.inspect_pending = False
            self.feed(ev.QueueInspected(len(self.ready_q)))
        elif kind == "confirm":
            p = self.publishes.pop(action[1])
            self.land(p)
            self.feed(ev.PublishConfirmed(action[1]))
        elif kind == "lose":  # the connection dies; unconfirmed publishes land or not
            self.losses_left -= 1
            for p in self.publishes.values():
                if action[1]:
                    self.land(p)
            self.publishes.clear()
            for message in sorted(self.unacked.values(), reverse=True):
                self.ready_q.appendleft(message)
            self.unacked.clear()
            self.next_tag = 0  # a new channel counts from 1 again
            self.up = self.consuming = False
            self.inspect_pending = self.stop_pending = False
            self.feed(ev.BrokerLost("connection reset"))
        elif kind == "ready":
            self.up = True
            self.feed(ev.BrokerReady())
        elif kind == "connect":
            self.connected = True
            self.feed(ev.Connected(TTS, "tts"))
            self.feed(ev.Connected(FTS, "fts"))
        else:
            super().run(action)


@settings(max_examples=150, deadline=None)
@given(specs=SPECS, losses=st.integers(1, 3), data=st.data())
def test_broker_losses_lose_nothing_and_never_publish_two_bodies_under_one_id(
        specs, losses: int, data: st.DataObject) -> None:
    ids = [fid(ch) for ch in "abcd"[: len(specs)]]
    world = BrokerWorld(dict(zip(ids, specs, strict=True)), losses_left=losses)
    for f, s in zip(ids, specs, strict=True):
        world.bodies.append(remote_body(f, [f"{i}.in" for i in range(s.files)]))
        world.ready_q.append(len(world.bodies) - 1)
    directory = tempfile.mkdtemp(prefix="broker-prop-")
    recorder = Recorder(directory, world.drv.core, max_bytes=1 << 30, keep=10)
    world.drv.observers.append(recorder)
    world.up = True
    world.feed(ev.BrokerReady())
    for _ in range(3000):
        acts = world.actions()
        if world.exited or not acts:
            break
        world.run(acts[data.draw(st.integers(0, len(acts) - 1), label="action")])
    recorder.close()
    drv = world.drv

    assert world.problems == []
    assert world.exited, f"stuck: {drv.core.step.state}, {len(drv.core.inputs)} inputs"
    [exit_effect] = [e for e in drv.effects if isinstance(e, fx.Exit)]
    assert exit_effect.code == 0
    assert drv.core.inputs == {} and drv.core.outputs == {} and drv.core.publishes == {}
    # every message acked exactly once, nothing left in the queue
    assert world.acked == Counter(range(len(ids)))
    assert not world.ready_q and not world.unacked
    # one body per message id; every output made reached the output queue
    for key, bodies in world.queue_bodies.items():
        assert len(bodies) == 1, (key, bodies)
    published = {json.loads(next(iter(b)))["metadata"]["fragment_id"]
                 for (q, _), b in world.queue_bodies.items() if q == OUT_QUEUE}
    made = {t.fragment for _, _, _, ts in drv.journal for t in ts
            if t.machine == "output" and t.trigger == "new"}
    assert published >= made
    drv.assert_files_deleted_once()
    assert ack_gating_violations(drv.journal) == []
    replayer = Replayer(load(directory))
    assert replayer.run(), replayer.divergence and replayer.divergence.describe()

