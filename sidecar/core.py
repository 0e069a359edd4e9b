"""The sidecar's decisions: events in, state-machine transitions, effects out. No I/O.

``Core.handle(event, now)`` is the only entry point. It is deterministic: the same events
with the same clock readings give the same transitions and the same effects, which is what
makes a recorded journal replayable. Every rule of the contract that is about *when*
something may happen (ack gating §16.8, the kill after the last fragment §12, giving work
back on a crash §16.5) lives here; the shell only moves bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from states import INPUT, OUTPUT, STEP, InvalidTransition, Lifecycle

from . import effects as fx
from . import events as ev
from .protocol import (
    KILL,
    DoneWith,
    InvalidMessage,
    Kill,
    OutputFragment,
    RemoteFile,
    RemoteFragment,
    dumps,
    encode_lineage,
    encode_local,
    encode_remote,
    input_dirs,
    inside,
    local_input_path,
    output_id,
    parse_frame,
    parse_remote,
)

KILL_FRAME = dumps(KILL)
OUTPUT_INDEX_LIMIT = 100_000  # predecessor sets whose output count is remembered (LRU)
EXIT_OK, EXIT_FATAL, EXIT_TRANSFORMATION = 0, 1, 3
_PRE_DISPATCH = ("received", "downloaded")


@dataclass(frozen=True)
class CoreConfig:
    """The settings the decisions depend on (recorded in a journal's header)."""

    volume: str
    step: str
    output_bucket: str
    output_queue: str
    lineage_queue: str
    dead_letter_queue: str
    prefetch: int
    queue_mapping: Mapping[str, str] = field(default_factory=dict)
    object_layout: str = "per-fragment"
    transformation_grace: float = 60.0
    # seconds from BrokerReady until the transformation's first connection; 0: no limit
    transformation_connect_timeout: float = 0.0
    shutdown_grace: float = 20.0
    queue_poll_interval: float = 1.0
    publish_attempts: int = 5
    # Operations (docs/operations.md). The defaults here switch the rules off; the
    # settings switch them on in production.
    stuck_after: float = 0.0  # seconds in one state before a fragment is reported stuck
    volume_min_free: int = 0  # bytes; below this, intake pauses (resumes at +25%)
    pause_when_orphaned: bool = False  # pause intake while the transformation is gone

    @classmethod
    def from_settings(cls, s: Any) -> CoreConfig:
        return cls(volume=s.data_volume_path, step=s.iterum_name,
                   output_bucket=s.minio_output_bucket, output_queue=s.mq_output_queue,
                   lineage_queue=s.lineage_queue, dead_letter_queue=s.dead_letter_queue,
                   prefetch=s.prefetch, queue_mapping=dict(s.queue_mapping),
                   object_layout=s.object_layout,
                   transformation_grace=s.transformation_grace,
                   transformation_connect_timeout=s.transformation_connect_timeout,
                   shutdown_grace=s.shutdown_grace, queue_poll_interval=s.queue_poll_interval,
                   publish_attempts=s.publish_attempts,
                   stuck_after=s.stuck_after, volume_min_free=s.volume_min_free,
                   pause_when_orphaned=True)

    def object_key(self, fragment_id: str, name: str) -> str:
        if self.object_layout == "flat":
            return f"iterum_data/{name}"
        return f"iterum_data/{fragment_id}/{name}"


@dataclass(eq=False)
class Tracked:
    """Common to the three kinds of state-machine models."""

    serial: int
    state: str
    history: list[tuple[str, float]] = field(default_factory=list)
    stuck_reported: int = 0  # len(history) when last reported stuck: once per state entry


@dataclass(eq=False)
class Input(Tracked):
    tag: int = 0
    body: bytes = b""
    desc: RemoteFragment | None = None
    paths: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    downloads_left: int = 0
    failure: ev.DownloadFailed | None = None
    conn: int | None = None
    unuploaded: set[int] = field(default_factory=set)  # gating outputs not yet in S3
    unrecorded: set[int] = field(default_factory=set)  # gating outputs not yet confirmed
    taint: tuple[str, str, bool] | None = None  # reason, detail, transient
    indexed: bool = False  # this input owns by_fragment[fragment_id]

    @property
    def fragment_id(self) -> str:
        return self.desc.fragment_id if self.desc else ""


@dataclass(eq=False)
class Output(Tracked):
    fragment_id: str = ""
    files: tuple[Any, ...] = ()
    remote: tuple[RemoteFile, ...] = ()
    predecessors: tuple[str, ...] = ()
    queue: str = ""
    target_queue: str | None = None
    custom: Any = None
    uploads_left: int = 0
    failure: ev.UploadFailed | None = None
    gates: set[int] = field(default_factory=set)  # inputs whose ack waits for this output
    descriptor: bytes = b""


@dataclass(frozen=True)
class Transition:
    """One state change, as the journal and the metrics see it."""

    machine: str
    serial: int
    fragment: str
    trigger: str
    source: str
    dest: str


@dataclass(frozen=True)
class PendingPublish:
    kind: str  # "descriptor", "lineage" or "dead_letter"
    owner: int
    queue: str
    body: bytes
    message_id: str | None
    headers: tuple[tuple[str, str], ...]
    attempt: int = 1


class Core:
    def __init__(self, config: CoreConfig):
        self.cfg = config
        self.now = 0.0
        self.step = Tracked(serial=0, state=STEP.initial)
        self.inputs: dict[int, Input] = {}
        self.outputs: dict[int, Output] = {}
        self.by_fragment: dict[str, int] = {}
        self.publishes: dict[int, PendingPublish] = {}
        self.ready: deque[int] = deque()  # downloaded inputs waiting for a tts connection
        self.tts: list[int] = []
        self.fts: set[int] = set()
        self.killed: set[int] = set()  # tts connections that got the kill
        self.kill_received = False
        self.orphaned = False  # every connection closed without a kill (§16.5)
        self.consuming = False
        self.upstream_finished = False
        self.deadlines: dict[str, float] = {}
        self.output_index: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self.bucket_dirs: set[str] = set()  # removed at exit when empty
        self.index_keys: dict[str, set[tuple[str, ...]]] = {}
        self.counts: Counter[str] = Counter()  # log codes, for summaries and metrics
        self.states: dict[str, Counter[str]] = {lc.name: Counter() for lc in (INPUT, OUTPUT)}
        self.exit_code: int | None = None
        self.exit_reason = ""
        # intake control (docs/operations.md): why consuming is paused, if it is
        self.volume_free: int | None = None
        self.volume_low = False
        self.paused: tuple[str, ...] = ()
        self.cancelling = False  # a basic.cancel is in flight
        self.pause_cancel = False  # ... and it is for a pause, not for the end of input
        self.intake_ended = False
        # the broker connection (docs/reliability.md): publishes wait while it is down
        self.broker_up = False
        # consuming after the input ended, only to take back deliveries a lost connection
        # returned to the queue while their inputs were still here
        self.adopting = False
        # what a killed predecessor on this volume had done (ev.Resume, sidecar/resume.py):
        # input id -> (sha256 of its body, ids of its outputs not yet recorded)
        self.resume_inputs: dict[str, tuple[str, tuple[str, ...]]] = {}
        # output id -> (stage: "uploaded", "published" or "recorded" (here), queue,
        # descriptor)
        self.resume_outputs: dict[str, tuple[str, str, bytes]] = {}
        # input id -> (files, dirs) the transformation may still read; deleted at the end
        self.leftovers: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._serial = 0
        self._publish_id = 0
        self._rr = 0
        self._out: list[fx.Effect] = []
        self.transitions: list[Transition] = []
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.BrokerReady: self._on_broker_ready,
            ev.Delivered: self._on_delivered,
            ev.ConsumerStopped: self._on_consumer_stopped,
            ev.ConsumerCancelledByBroker: self._on_consumer_cancelled,
            ev.BrokerLost: self._on_broker_lost,
            ev.QueueInspected: self._on_queue_inspected,
            ev.PublishConfirmed: self._on_confirmed,
            ev.PublishRejected: self._on_rejected,
            ev.FileDownloaded: self._on_downloaded,
            ev.DownloadFailed: self._on_download_failed,
            ev.FileUploaded: self._on_uploaded,
            ev.UploadFailed: self._on_upload_failed,
            ev.Connected: self._on_connected,
            ev.Disconnected: self._on_disconnected,
            ev.FrameReceived: self._on_frame,
            ev.FrameRejected: self._on_frame_rejected,
            ev.UpstreamFinished: self._on_upstream_finished,
            ev.Fatal: self._on_fatal,
            ev.ShutdownRequested: self._on_shutdown,
            ev.Tick: self._on_tick,
            ev.VolumeSpace: self._on_volume_space,
            ev.Resume: self._on_resume,
        }

    # --- entry points ----------------------------------------------------------------

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        """Consume one event; return the effects to perform, in order."""
        self.now = now
        self._out = []
        self.transitions = []
        if self.step.state != "exited":
            self._handlers[type(event)](event)
            self._advance()
        return self._out

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values(), default=None)

    def state_of(self, fragment_id: str) -> str:
        """The state of the input (else output) with this id in flight, or ""."""
        inp = self.inputs.get(self.by_fragment.get(fragment_id, -1))
        if inp is not None:
            return inp.state
        return next((o.state for o in self.outputs.values()
                     if o.fragment_id == fragment_id), "") if fragment_id else ""

    @property
    def in_flight(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def snapshot(self) -> dict[str, Any]:
        """The complete state as JSON-ready data (see sidecar/snapshot.py)."""
        from .snapshot import snapshot

        return snapshot(self)

    @classmethod
    def restore(cls, config: CoreConfig, state: dict[str, Any]) -> Core:
        """A core that continues exactly where the snapshotted one was."""
        from .snapshot import restore

        return restore(config, state)

    # --- bookkeeping helpers ---------------------------------------------------------

    def _emit(self, effect: fx.Effect) -> None:
        self._out.append(effect)

    def _log(self, level: str, code: str, message: str, fragment: str = "") -> None:
        self.counts[code] += 1
        self._emit(fx.Log(level, code, message, fragment))

    def _fire(self, lc: Lifecycle, model: Tracked, trigger: str) -> None:
        source = model.state
        try:
            lc.fire(model, trigger)
        except InvalidTransition as err:  # a bug in the rules below; never crash on it
            self._log("error", "invalid-transition", str(err), _fragment_of(model))
            return
        if lc is not STEP:
            counts = self.states[lc.name]
            counts[source] -= 1
            counts[model.state] += 1
        model.history.append((model.state, self.now))
        self.transitions.append(Transition(lc.name, model.serial, _fragment_of(model),
                                           trigger, source, model.state))

    def _new_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _publish(self, pending: PendingPublish) -> None:
        """Register a publish; it is sent now, or when the broker is back (BrokerReady)."""
        self._publish_id += 1
        self.publishes[self._publish_id] = pending
        if self.broker_up:
            self._send_publish(self._publish_id, pending)

    def _send_publish(self, publish_id: int, pending: PendingPublish) -> None:
        self._emit(fx.Publish(publish_id, pending.queue, pending.body, pending.message_id,
                              pending.headers))

    # --- broker ----------------------------------------------------------------------

    def _on_broker_ready(self, _: ev.BrokerReady) -> None:
        if self.broker_up:
            return
        self.broker_up = True
        if self.step.state != "starting":
            self._on_broker_back()
            return
        self._fire(STEP, self.step, "broker_ready")
        if self.cfg.transformation_connect_timeout and not self._transformation_seen():
            self.deadlines["connect"] = self.now + self.cfg.transformation_connect_timeout
        reasons = self._pause_reasons()
        if reasons:
            self.paused = reasons
            self._log("warning", "intake-paused", "not consuming yet: " + ", ".join(reasons))
        else:
            self.consuming = True
            self._emit(fx.StartConsuming(self.cfg.prefetch))
        if self.upstream_finished:
            self._begin_queue_drain()

    def _on_broker_back(self) -> None:
        """Reconnected after a loss: send every unconfirmed publish again (same bodies, same
        message ids: a copy the broker already had is an identical duplicate), and consume
        again unless the input has ended or intake is paused."""
        self._log("info", "broker-reconnected",
                  f"the broker connection is back; {len(self.publishes)} unconfirmed "
                  "publish(es) sent again")
        for publish_id, pending in self.publishes.items():
            self._send_publish(publish_id, pending)
        if self.intake_ended:
            if any(not i.tag for i in self.inputs.values()):
                # The input had ended, but the loss put our unacked deliveries back in the
                # queue: consume once more, only to take them back.
                self.adopting = self.consuming = True
                self._emit(fx.StartConsuming(self.cfg.prefetch))
                self._emit(fx.InspectQueue())
            return
        if self.step.state not in ("consuming", "draining_queue"):
            return
        reasons = self._pause_reasons()
        if reasons:
            self.paused = reasons
        else:
            self.paused = ()
            self.consuming = True
            self._emit(fx.StartConsuming(self.cfg.prefetch))
        if self.step.state == "draining_queue":  # an inspection in flight was lost
            self.deadlines.pop("inspect", None)
            self._emit(fx.InspectQueue())

    def _on_delivered(self, e: ev.Delivered) -> None:
        if self.adopting:
            self._adopt_only(e)
            return
        if self.step.state not in ("consuming", "draining_queue"):
            self._emit(fx.Nack(e.tag, requeue=True))
            self._log("info", "delivery-returned", "intake is closed; delivery requeued")
            return
        inp = Input(serial=self._new_serial(), state=INPUT.initial, tag=e.tag, body=e.body)
        try:
            inp.desc = parse_remote(e.body)
        except InvalidMessage as err:
            self._track_new(INPUT, inp)
            self._dead_letter(inp, err.reason, str(err))
            return
        self._track_new(INPUT, inp)
        fid = inp.fragment_id
        if e.redelivered:
            self._log("info", "redelivered", "input was delivered before", fid)
        twin = self.inputs.get(self.by_fragment.get(fid, -1))
        if twin is not None:
            self._on_duplicate(inp, twin)
            return
        self.by_fragment[fid] = inp.serial
        inp.indexed = True
        leftover = self.leftovers.pop(fid, None)
        known = self.resume_inputs.pop(fid, None)
        if known is not None:
            resumable = hashlib.sha256(e.body).hexdigest() == known[0]
            if resumable:
                self._resume_input(inp, known[1], leftover)
            else:
                self._log("warning", "resume-mismatch", "the killed sidecar's journal knows "
                          "this id with another body; processed again", fid)
            self._prune_resume_outputs()
            if resumable:
                return
        self._reset_output_index(fid)  # processed again: its outputs get the same ids
        self._start_downloads(inp)
        if leftover is not None:
            # The same paths (and .part files) are downloaded again now and deleted at
            # done_with with their directories; only files of another shape go now.
            reused = {*inp.paths, *(f"{p}.part" for p in inp.paths)}
            extra = tuple(p for p in leftover[0] if p not in reused)
            if extra:
                self._emit(fx.DeleteFiles(extra))

    def _adopt_only(self, e: ev.Delivered) -> None:
        """After the input ended: a delivery of an input still here with a void tag takes
        it back; anything else goes back to the queue, and consuming stops."""
        try:
            fid = parse_remote(e.body).fragment_id
        except InvalidMessage:
            fid = ""
        twin = self.inputs.get(self.by_fragment.get(fid, -1))
        if twin is not None and not twin.tag and twin.body == e.body:
            twin.tag = e.tag
            self._log("info", "redelivery-adopted", f"delivered again after the connection "
                      f"was lost; the input in flight ({twin.state}) takes the new delivery",
                      fid)
            self._progress(twin)
            if not any(not i.tag for i in self.inputs.values()):
                self._stop_adopting()
            return
        self._emit(fx.Nack(e.tag, requeue=True))
        self._log("info", "delivery-returned", "intake is closed; delivery requeued")
        self._stop_adopting()

    def _stop_adopting(self) -> None:
        if self.consuming:
            self.consuming = False
            self.cancelling = True
            self._emit(fx.StopConsuming())

    def _on_duplicate(self, inp: Input, twin: Input) -> None:
        """A second delivery of an id in flight: the broker still holds the first copy, or
        (its tag void after a lost connection) it is the first copy, delivered again."""
        if not twin.tag and twin.body == inp.body:
            twin.tag = inp.tag
            self._forget(inp)
            self._log("info", "redelivery-adopted", f"delivered again after the connection "
                      f"was lost; the input in flight ({twin.state}) takes the new delivery",
                      twin.fragment_id)
            self._progress(twin)
            return
        if twin.body == inp.body:
            self._log("warning", "duplicate-delivery",
                      "same fragment delivered twice; the copy is acked, the original "
                      "is processed", inp.fragment_id)
            self._emit(fx.Ack(inp.tag))
            self._forget(inp)
            return
        self._dead_letter(inp, "conflicting-duplicate",
                          "another fragment with this id and different content is in flight")

    def _on_queue_inspected(self, e: ev.QueueInspected) -> None:
        if self.adopting:
            if e.ready == 0:  # what is not back here is with another consumer
                self._stop_adopting()
            else:
                self.deadlines["inspect"] = self.now + self.cfg.queue_poll_interval
            return
        if self.step.state != "draining_queue":
            return
        if e.ready == 0:
            self._stop_consuming()
            if not self.cancelling:  # intake was paused: no consumer left to cancel
                self._fire(STEP, self.step, "consumer_stopped")
        else:
            self.deadlines["inspect"] = self.now + self.cfg.queue_poll_interval

    def _on_consumer_stopped(self, _: ev.ConsumerStopped) -> None:
        self.consuming = False
        self.cancelling = False
        if self.adopting:
            self.adopting = False
            return
        if self.pause_cancel:  # a pause, not the end of the input
            self.pause_cancel = False
            return
        if self.step.state == "draining_queue":
            self._fire(STEP, self.step, "consumer_stopped")

    def _on_consumer_cancelled(self, _: ev.ConsumerCancelledByBroker) -> None:
        self.consuming = False
        self._stop(EXIT_FATAL, "consumer-cancelled",
                   "the broker cancelled the consumer (input queue deleted?)")

    def _on_broker_lost(self, e: ev.BrokerLost) -> None:
        """The broker requeued every unacked delivery of the lost connection: their tags are
        void. The work in flight goes on (downloads, the transformation, uploads); publishes
        wait for the reconnect; a void input that finishes waits for its delivery to come
        back (it is then adopted), or for the end of the input (another consumer has it).
        """
        if not e.retrying:
            self._on_broker_gone(e)
            return
        ending = (self.cancelling and not self.pause_cancel  # the consumer is gone anyway
                  and not self.adopting)
        self.broker_up = self.consuming = self.cancelling = self.pause_cancel = False
        self.adopting = False
        void = 0
        for inp in list(self.inputs.values()):
            if not inp.tag or inp.state in INPUT.terminal:
                continue
            inp.tag = 0
            void += 1
            if inp.state == "dead_lettering":  # the broker has the original: start again
                for publish_id, pending in list(self.publishes.items()):
                    if pending.kind == "dead_letter" and pending.owner == inp.serial:
                        del self.publishes[publish_id]
                self._release(inp)
        self._log("warning", "broker-lost",
                  f"{e.error}; reconnecting. {void} unacked input(s) went back to the queue "
                  f"(kept here until delivered again); {len(self.publishes)} unconfirmed "
                  "publish(es) will be sent again")
        if ending and self.step.state == "draining_queue":
            self._fire(STEP, self.step, "consumer_stopped")

    def _on_broker_gone(self, e: ev.BrokerLost) -> None:
        """Reconnecting failed for good: nothing can be acked or published any more; the
        broker has every unacked input. Give up the rest, leave the volume clean, exit 1."""
        self.broker_up = self.consuming = self.cancelling = self.pause_cancel = False
        self.adopting = False
        for inp in list(self.inputs.values()):
            inp.tag = 0
            if inp.state not in INPUT.terminal:
                self._release(inp)
        self.publishes.clear()
        for out in list(self.outputs.values()):
            if out.state == "received":  # not uploaded: its files would stay behind
                local = tuple(f.path for f in out.files if inside(self.cfg.volume, f.path))
                if local:
                    self._emit(fx.DeleteFiles(local))
            self._fire(OUTPUT, out, "fail")
            self._forget(out)
        self._stop(EXIT_FATAL, "broker-unreachable",
                   f"{e.error}; exiting: unacked inputs return to the queue")

    def _release(self, inp: Input) -> None:
        """The broker took this delivery back with its connection: nothing to settle."""
        self._fire(INPUT, inp, "give_back")
        self._cleanup_input(inp)
        self._maybe_forget(inp)

    def _stop_consuming(self) -> None:
        """No more intake, for good (end of the input, or stopping)."""
        self.intake_ended = True
        self.pause_cancel = False  # a pause's cancel in flight now ends the input
        if self.consuming:
            self.consuming = False
            self.cancelling = True
            self._emit(fx.StopConsuming())

    # --- intake control and the volume (docs/operations.md) ---------------------------

    def _on_volume_space(self, e: ev.VolumeSpace) -> None:
        self.volume_free = e.free_bytes
        limit = self.cfg.volume_min_free
        if not limit:
            return
        if not self.volume_low and e.free_bytes < limit:
            self.volume_low = True
            self._log("warning", "volume-low",
                      f"{e.free_bytes} bytes free on the volume, below "
                      f"SIDECAR_VOLUME_MIN_FREE ({limit})")
        elif self.volume_low and e.free_bytes >= limit + limit // 4:
            self.volume_low = False
            self._log("info", "volume-ok", f"{e.free_bytes} bytes free on the volume again")

    def _pause_reasons(self) -> tuple[str, ...]:
        reasons = []
        if self.orphaned and self.cfg.pause_when_orphaned:
            reasons.append("transformation-absent")
        if self.volume_low:
            reasons.append("volume-low")
        return tuple(reasons)

    def _steer_intake(self) -> None:
        """Pause consuming (basic.cancel) while the transformation is gone or the volume is
        nearly full; resume (basic.qos + basic.consume) when neither holds any more.

        Deliveries already on their way when the cancel is sent are processed normally;
        the unacked ones stay ours. A resume waits for the cancel's confirmation, so the
        consumer tag is never reused while the broker still knows it.
        """
        if (self.step.state not in ("consuming", "draining_queue") or self.intake_ended
                or not self.broker_up):
            return
        reasons = self._pause_reasons()
        if reasons:
            if not self.paused:
                self._log("warning", "intake-paused",
                          "stopped consuming: " + ", ".join(reasons))
            self.paused = reasons
            if self.consuming:
                self.consuming = False
                self.cancelling = self.pause_cancel = True
                self._emit(fx.StopConsuming())
        elif self.paused and not self.cancelling:
            self.paused = ()
            self.consuming = True
            self._log("info", "intake-resumed", "consuming again")
            self._emit(fx.StartConsuming(self.cfg.prefetch))

    # --- stuck fragments (docs/operations.md) -----------------------------------------

    def _tracked(self) -> itertools.chain[Input | Output]:
        return itertools.chain(self.inputs.values(), self.outputs.values())

    def _watch_stuck(self) -> None:
        """Keep the "stuck" deadline at the first moment a fragment would be stuck."""
        if not self.cfg.stuck_after:
            return
        due = min((m.history[-1][1] for m in self._tracked()
                   if m.stuck_reported != len(m.history) and not _terminal(m)), default=None)
        if due is None:
            self.deadlines.pop("stuck", None)
        else:
            self.deadlines["stuck"] = due + self.cfg.stuck_after

    def _report_stuck(self) -> None:
        for model in self._tracked():
            since = model.history[-1][1]
            if (model.stuck_reported == len(model.history) or _terminal(model)
                    or self.now - since < self.cfg.stuck_after):
                continue
            model.stuck_reported = len(model.history)
            kind = "input" if isinstance(model, Input) else "output"
            self._log("warning", f"stuck-{kind}-{model.state}",
                      f"{kind} fragment {model.state} for {self.now - since:.0f}s "
                      f"(SIDECAR_STUCK_AFTER={self.cfg.stuck_after:g}s)", _fragment_of(model))

    def stuck(self) -> list[Input | Output]:
        """The fragments reported stuck that are still in the state they were stuck in."""
        return [m for m in self._tracked()
                if m.stuck_reported == len(m.history) and not _terminal(m)]

    # --- downloads -------------------------------------------------------------------

    def _start_downloads(self, inp: Input) -> None:
        desc = inp.desc
        assert desc is not None
        inp.paths = tuple(local_input_path(self.cfg.volume, desc, f) for f in desc.files)
        inp.dirs = input_dirs(self.cfg.volume, desc)
        self.bucket_dirs.update(posixpath.join(self.cfg.volume, f.bucket) for f in desc.files)
        inp.downloads_left = len(desc.files)
        for i, (f, dest) in enumerate(zip(desc.files, inp.paths, strict=True)):
            self._emit(fx.DownloadFile(inp.serial, i, f.bucket, f.path, dest))
        if not desc.files:
            self._downloads_settled(inp)

    def _on_downloaded(self, e: ev.FileDownloaded) -> None:
        inp = self.inputs.get(e.input_id)
        if inp is not None:
            inp.downloads_left -= 1
            self._downloads_settled(inp)

    def _on_download_failed(self, e: ev.DownloadFailed) -> None:
        inp = self.inputs.get(e.input_id)
        if inp is None:
            return
        inp.downloads_left -= 1
        inp.failure = inp.failure or e
        self._downloads_settled(inp)

    def _downloads_settled(self, inp: Input) -> None:
        if inp.downloads_left > 0:
            return
        if inp.state in INPUT.terminal:  # given back while downloading
            self._cleanup_input(inp)
            self._maybe_forget(inp)
        elif inp.failure is not None:
            self._cleanup_input(inp)
            f = inp.failure
            detail = f"{f.error} (after {f.attempts} attempts)"
            if f.transient:
                self._give_back(inp, "storage-unavailable", f"download failed: {detail}")
            else:
                self._dead_letter(inp, f.reason, f"download failed: {detail}")
        else:
            self._fire(INPUT, inp, "download_done")
            self.ready.append(inp.serial)

    # --- the transformation ----------------------------------------------------------

    def _transformation_seen(self) -> bool:
        """Has the transformation ever connected? (Once it has, a disconnect is a crash,
        handled by the grace period; without new state, so snapshots stay as they are.)"""
        return bool(self.tts or self.fts or self.orphaned or self.kill_received)

    def _on_connect_timeout(self) -> None:
        """The transformation never connected (it died at start, or its image never came
        up): the original waited forever; give the inputs back and exit 3."""
        if self.step.state == "stopping" or self._transformation_seen():
            return
        self._stop(EXIT_TRANSFORMATION, "transformation-never-connected",
                   f"the transformation did not connect to the sockets within "
                   f"{self.cfg.transformation_connect_timeout:g}s "
                   "(SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT)")

    def _on_connected(self, e: ev.Connected) -> None:
        self.deadlines.pop("grace", None)
        self.deadlines.pop("connect", None)
        if e.channel == "fts":
            self.fts.add(e.conn)
            return
        self.tts.append(e.conn)
        if self.orphaned:
            self.orphaned = False
            self._redispatch_orphans()

    def _redispatch_orphans(self) -> None:
        """§16.5: the transformation came back after a crash; it has none of its fragments."""
        orphans = [i for i in self.inputs.values() if i.state == "dispatched"]
        for inp in orphans:
            self._send_fragment(inp, "redispatch")
        if orphans:
            self._log("warning", "redispatched",
                      f"{len(orphans)} fragment(s) sent again after the transformation "
                      "reconnected")

    def _on_disconnected(self, e: ev.Disconnected) -> None:
        if e.channel == "tts" and e.conn in self.tts:
            self.tts.remove(e.conn)
        self.fts.discard(e.conn)
        self.killed.discard(e.conn)
        if self.tts or self.fts or self.kill_received:
            return
        if self.step.state == "stopping":
            self._give_back_unprocessed("transformation-gone", "the transformation is gone")
            return
        self.orphaned = True
        self.deadlines["grace"] = self.now + self.cfg.transformation_grace
        self._log("warning", "transformation-disconnected",
                  f"the transformation closed both sockets without a kill; waiting "
                  f"{self.cfg.transformation_grace:g}s for it to reconnect")

    def _dispatch_ready(self) -> None:
        while self.ready and self.tts and self.step.state not in ("stopping", "exited"):
            inp = self.inputs.get(self.ready.popleft())
            if inp is not None and inp.state == "downloaded":
                self._send_fragment(inp, "dispatch")

    def _send_fragment(self, inp: Input, trigger: str) -> None:
        assert inp.desc is not None
        conn = self.tts[self._rr % len(self.tts)]
        self._rr += 1
        inp.conn = conn
        # The transformation starts on it (again): its outputs are counted from here, so a
        # re-run yields the same ids. Outputs naming it that came before the dispatch can
        # only be a killed sidecar's, finished by a transformation that outlived it.
        self._reset_output_index(inp.fragment_id)
        self._fire(INPUT, inp, trigger)
        self._emit(fx.SendFrame(conn, encode_local(inp.desc, list(inp.paths))))

    def _on_frame_rejected(self, e: ev.FrameRejected) -> None:
        self._log("error", "frame-rejected", f"connection {e.conn}: {e.reason}; dropped it")
        self._emit(fx.CloseConnection(e.conn))

    def _on_frame(self, e: ev.FrameReceived) -> None:
        try:
            message = parse_frame(e.payload)
        except InvalidMessage as err:
            # The framing is intact, so skip just this frame: dropping the connection
            # would throw away valid frames already queued behind it.
            self._log("error", f"frame-{err.reason}",
                      f"connection {e.conn}: {err}; frame of {len(e.payload)} bytes skipped")
            return
        if isinstance(message, OutputFragment):
            self._on_output(message)
        elif isinstance(message, DoneWith):
            self._on_done_with(message.fragment_id)
        elif isinstance(message, Kill):
            self._on_kill()

    def _on_done_with(self, fragment_id: str) -> None:
        inp = self.inputs.get(self.by_fragment.get(fragment_id, -1))
        if inp is None:
            self._log("warning", "done-with-unknown",
                      "done_with for a fragment that is not in flight; ignored", fragment_id)
            return
        if inp.state != "dispatched":
            self._log("warning", "done-with-unexpected",
                      f"done_with in state {inp.state}; ignored", fragment_id)
            return
        self._fire(INPUT, inp, "done_with")
        self._cleanup_input(inp)
        self._progress(inp)

    def _on_kill(self) -> None:
        if self.kill_received:
            self._log("warning", "second-kill", "a second kill from the transformation; ignored")
            return
        self.kill_received = True
        self.deadlines.pop("grace", None)
        if self.step.state == "kill_sent":
            self._fire(STEP, self.step, "transformation_finished")
            self.deadlines["fts_close"] = self.now + self.cfg.transformation_grace
        elif self.step.state != "stopping":
            self._stop(EXIT_TRANSFORMATION, "early-kill",
                       "the transformation ended before the input stream did")

    # --- outputs ---------------------------------------------------------------------

    def _on_output(self, msg: OutputFragment) -> None:
        out = Output(serial=self._new_serial(), state=OUTPUT.initial, files=msg.files,
                     predecessors=msg.predecessors, custom=msg.custom,
                     fragment_id=self._next_output_id(msg.predecessors))
        self._track_new(OUTPUT, out)
        self._gate(out)
        problem = self._output_problem(msg)
        if problem:
            self._fail_output(out, "invalid-output", problem, transient=False)
            return
        if not msg.predecessors_given:
            self._log("warning", "output-without-predecessors",
                      "output names no predecessors; published with predecessors []",
                      out.fragment_id)
        out.target_queue = self.cfg.queue_mapping.get(msg.output_channel or "")
        out.queue = out.target_queue or self.cfg.output_queue
        out.remote = tuple(RemoteFile(f.name, self.cfg.object_key(out.fragment_id, f.name),
                                      self.cfg.output_bucket) for f in msg.files)
        out.uploads_left = len(msg.files)
        for i, (f, r) in enumerate(zip(msg.files, out.remote, strict=True)):
            self._emit(fx.UploadFile(out.serial, i, r.bucket, r.path, f.path))

    def _output_problem(self, msg: OutputFragment) -> str:
        if msg.problem:
            return msg.problem
        for f in msg.files:
            if not inside(self.cfg.volume, f.path):
                return f"output file {f.path!r} is not inside the data volume"
        if msg.output_channel and msg.output_channel not in self.cfg.queue_mapping:
            return (f"output_channel {msg.output_channel!r} is not in "
                    "ITERUM_CONFIG.queue_mapping")
        return ""

    def _next_output_id(self, predecessors: tuple[str, ...]) -> str:
        """§16.15: the index counts outputs with these predecessors since they were delivered.

        It restarts only when a predecessor is delivered (or re-dispatched) again, so a late
        output (after done_with, even after the ack) never reuses an earlier output's id.
        """
        key = tuple(sorted(predecessors))
        index = self.output_index.pop(key, 0)
        self.output_index[key] = index + 1
        for p in set(key):
            self.index_keys.setdefault(p, set()).add(key)
        if len(self.output_index) > OUTPUT_INDEX_LIMIT:
            self._drop_index_key(next(iter(self.output_index)))
        return output_id(self.cfg.step, list(predecessors), index)

    def _reset_output_index(self, fragment_id: str) -> None:
        for key in list(self.index_keys.get(fragment_id, ())):
            self._drop_index_key(key)

    def _drop_index_key(self, key: tuple[str, ...]) -> None:
        self.output_index.pop(key, None)
        for p in set(key):
            keys = self.index_keys.get(p)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.index_keys[p]

    def _gate(self, out: Output) -> None:
        """§16.8: an output received before its predecessor's done_with holds that ack."""
        for p in set(out.predecessors):
            inp = self.inputs.get(self.by_fragment.get(p, -1))
            if inp is not None and inp.state in ("received", "downloaded", "dispatched"):
                out.gates.add(inp.serial)
                inp.unuploaded.add(out.serial)
                inp.unrecorded.add(out.serial)

    def _on_uploaded(self, e: ev.FileUploaded) -> None:
        out = self.outputs.get(e.output_id)
        if out is not None:
            out.uploads_left -= 1
            self._uploads_settled(out)

    def _on_upload_failed(self, e: ev.UploadFailed) -> None:
        out = self.outputs.get(e.output_id)
        if out is not None:
            out.uploads_left -= 1
            out.failure = out.failure or e
            self._uploads_settled(out)

    def _uploads_settled(self, out: Output) -> None:
        if out.uploads_left > 0:
            return
        if out.failure is not None:
            f = out.failure
            self._fail_output(out, f.reason, f"upload failed: {f.error} "
                              f"(after {f.attempts} attempts)", f.transient)
            return
        self._fire(OUTPUT, out, "upload_done")
        self._emit(fx.DeleteFiles(tuple(f.path for f in out.files)))
        for inp in self._gated(out):
            inp.unuploaded.discard(out.serial)
            self._progress(inp)
        out.descriptor = encode_remote(out.fragment_id, list(out.remote),
                                       list(out.predecessors), out.target_queue, out.custom)
        self._publish(PendingPublish("descriptor", out.serial, out.queue, out.descriptor,
                                     out.fragment_id, ()))

    def _fail_output(self, out: Output, reason: str, detail: str, transient: bool) -> None:
        files_local = out.state == "received"  # deleted on upload_done otherwise
        self._fire(OUTPUT, out, "fail")
        gated = self._gated(out)
        if gated:
            # The inputs are kept (requeued or dead-lettered), so the output can be made
            # again: its local files need not stay behind.
            self._log("error", f"output-{reason}", detail + "; its inputs will be "
                      + ("requeued" if transient else "dead-lettered"), out.fragment_id)
            inside_volume = [f.path for f in out.files if inside(self.cfg.volume, f.path)]
            if files_local and inside_volume:
                self._emit(fx.DeleteFiles(tuple(inside_volume)))
        else:
            where = ("its files are left on the volume" if files_local else
                     f"its objects are in bucket {self.cfg.output_bucket}")
            self._log("error", "output-lost", f"{detail}; no input waits for it (done_with "
                      f"came first), so it cannot be made again: {where}", out.fragment_id)
        for inp in gated:
            inp.taint = inp.taint or (reason, detail, transient)
            inp.unuploaded.discard(out.serial)
            inp.unrecorded.discard(out.serial)
            self._progress(inp)
        self._forget(out)

    def _gated(self, out: Output) -> list[Input]:
        return [i for s in sorted(out.gates) if (i := self.inputs.get(s)) is not None]

    # --- confirms --------------------------------------------------------------------

    def _on_confirmed(self, e: ev.PublishConfirmed) -> None:
        pending = self.publishes.pop(e.publish_id, None)
        if pending is None:
            return
        if pending.kind == "dead_letter":
            inp = self.inputs[pending.owner]
            if inp.tag:
                self._emit(fx.Ack(inp.tag))
            self._fire(INPUT, inp, "dead_letter_confirmed")
            self._maybe_forget(inp)
            return
        out = self.outputs[pending.owner]
        if pending.kind == "descriptor":
            self._fire(OUTPUT, out, "publish_confirmed")
            self._publish(PendingPublish("lineage", out.serial, self.cfg.lineage_queue,
                                         encode_lineage(self.cfg.step, out.descriptor),
                                         out.fragment_id, ()))
            return
        self._fire(OUTPUT, out, "lineage_confirmed")
        known = self.resume_outputs.get(out.fragment_id)
        if known is not None:
            self.resume_outputs[out.fragment_id] = ("recorded", known[1], b"")
        for inp in self._gated(out):
            inp.unrecorded.discard(out.serial)
            self._progress(inp)
        self._forget(out)

    def _on_rejected(self, e: ev.PublishRejected) -> None:
        pending = self.publishes.pop(e.publish_id, None)
        if pending is None:
            return
        if pending.attempt < self.cfg.publish_attempts:
            self._log("warning", "publish-refused",
                      f"broker refused a {pending.kind} publish ({e.reason}); retrying")
            self._publish(PendingPublish(pending.kind, pending.owner, pending.queue,
                                         pending.body, pending.message_id, pending.headers,
                                         pending.attempt + 1))
            return
        detail = f"broker refused the {pending.kind} {pending.attempt} times ({e.reason})"
        if pending.kind == "dead_letter":
            inp = self.inputs[pending.owner]
            self._log("error", "dead-letter-refused", detail + "; input requeued instead",
                      inp.fragment_id)
            self._fire(INPUT, inp, "give_back")
            if inp.tag:
                self._emit(fx.Nack(inp.tag, requeue=True))
            self._maybe_forget(inp)
        else:
            self._fail_output(self.outputs[pending.owner], "publish-refused", detail, True)

    # --- the input's end -------------------------------------------------------------

    def _progress(self, inp: Input) -> None:
        """Move a processed input along as its gating outputs land; ack at the end."""
        if inp.state == "processed" and not inp.unuploaded:
            self._fire(INPUT, inp, "outputs_uploaded")
        if inp.state == "uploaded" and not inp.unrecorded:
            self._fire(INPUT, inp, "outputs_published")
        if inp.state != "published" or not inp.tag:
            return  # a void tag: settled once the delivery comes back (or the input ends)
        if inp.taint is None:
            self._emit(fx.Ack(inp.tag))
            self._fire(INPUT, inp, "ack")
            self._maybe_forget(inp)
            return
        reason, detail, transient = inp.taint
        if transient:
            self._give_back(inp, reason, detail)
        else:
            self._dead_letter(inp, reason, detail)

    def _dead_letter(self, inp: Input, reason: str, detail: str) -> None:
        """§16.1: keep the body with the reason, then ack the original."""
        if not inp.tag:  # the broker has it again; whoever gets it dead-letters it
            self._release(inp)
            return
        state = inp.state
        self._fire(INPUT, inp, "dead_letter")
        self._log("error", f"dead-letter-{reason}", detail, inp.fragment_id)
        attempts = str(inp.failure.attempts if inp.failure else 1)
        headers = (("x-iterum-error-class", reason), ("x-iterum-error", detail[:1000]),
                   ("x-iterum-state", state), ("x-iterum-attempts", attempts),
                   ("x-iterum-step", self.cfg.step))
        self._publish(PendingPublish("dead_letter", inp.serial, self.cfg.dead_letter_queue,
                                     inp.body, inp.fragment_id or None, headers))

    def _give_back(self, inp: Input, reason: str, detail: str) -> None:
        self._log("warning", f"requeued-{reason}", detail, inp.fragment_id)
        self._fire(INPUT, inp, "give_back")
        if inp.tag:  # a void tag went back to the queue with its connection
            self._emit(fx.Nack(inp.tag, requeue=True))
        self._cleanup_input(inp)
        self._maybe_forget(inp)

    def _give_back_unprocessed(self, reason: str, detail: str) -> None:
        for inp in list(self.inputs.values()):
            if inp.state in ("received", "downloaded", "dispatched"):
                self._give_back(inp, reason, detail)

    def _cleanup_input(self, inp: Input) -> None:
        """Delete the local copies once nothing is writing them (exactly once)."""
        if inp.paths and inp.downloads_left == 0:
            self._emit(fx.DeleteFiles(inp.paths, inp.dirs))
            inp.paths = ()

    def _maybe_forget(self, inp: Input) -> None:
        if inp.state in INPUT.terminal and inp.downloads_left == 0:
            self._cleanup_input(inp)
            self._forget(inp)

    def _track_new(self, lc: Lifecycle, model: Input | Output) -> None:
        table: dict = self.inputs if lc is INPUT else self.outputs
        table[model.serial] = model
        self.states[lc.name][model.state] += 1
        model.history.append((model.state, self.now))
        self.transitions.append(Transition(lc.name, model.serial, _fragment_of(model), "new",
                                           "", model.state))

    def _forget(self, model: Input | Output) -> None:
        if isinstance(model, Input):
            self.inputs.pop(model.serial, None)
            if model.indexed:
                self.by_fragment.pop(model.fragment_id, None)
            self.states[INPUT.name][model.state] -= 1
        else:
            self.outputs.pop(model.serial, None)
            self.states[OUTPUT.name][model.state] -= 1

    # --- the end of the stream (§12) ---------------------------------------------------

    def _on_upstream_finished(self, _: ev.UpstreamFinished) -> None:
        self.upstream_finished = True
        if self.step.state == "consuming":
            self._begin_queue_drain()

    def _begin_queue_drain(self) -> None:
        self._fire(STEP, self.step, "upstream_finished")
        self._emit(fx.InspectQueue())

    def _on_fatal(self, e: ev.Fatal) -> None:
        self._stop(EXIT_FATAL, e.reason, e.error)

    def _on_shutdown(self, e: ev.ShutdownRequested) -> None:
        self._log("info", "shutdown-requested",
                  f"{e.signal}: finishing in-flight fragments for up to "
                  f"{self.cfg.shutdown_grace:g}s, then giving the rest back")
        self.deadlines["shutdown"] = self.now + self.cfg.shutdown_grace
        self._stop(EXIT_OK, "", "", give_back_dispatched=not (self.tts or self.fts))

    def _stop(self, code: int, reason: str, detail: str, give_back_dispatched: bool = True):
        if reason:
            self._log("error", reason, detail)
        self.exit_code = max(code, self.exit_code or 0)
        self.exit_reason = self.exit_reason or detail
        if self.step.state != "stopping":
            self._fire(STEP, self.step, "stop")
        self._stop_consuming()
        for inp in list(self.inputs.values()):
            if inp.state in _PRE_DISPATCH or (give_back_dispatched and inp.state == "dispatched"):
                self._give_back(inp, "stopping", "the sidecar is stopping")

    def _on_tick(self, _: ev.Tick) -> None:
        due = [name for name, t in self.deadlines.items() if t <= self.now]
        for name in due:
            del self.deadlines[name]
            {"inspect": lambda: self.broker_up and self._emit(fx.InspectQueue()),
             "grace": self._on_grace_expired,
             "connect": self._on_connect_timeout,
             "shutdown": self._on_shutdown_grace_over,
             "fts_close": lambda: None,
             "stuck": self._report_stuck}[name]()

    def _on_shutdown_grace_over(self) -> None:
        """SIGTERM's grace is over: every input not yet acked goes back to the broker, so
        the sidecar can exit 0 now instead of outlasting the pod's termination grace.

        Outputs that hold an input's ack are abandoned with it (the redelivered input makes
        them again, with the same ids); a descriptor already published may then appear
        twice with the same message_id, which downstream de-duplicates. Outputs that hold
        no input (the transformation sent them after done_with) are still waited for: no
        redelivery could make them again. Downloads still running are abandoned too.
        """
        detail = "shutdown grace over"
        for out in [o for o in self.outputs.values() if o.gates]:
            self._abandon_output(out)
        for inp in list(self.inputs.values()):
            if inp.state not in INPUT.terminal and inp.state != "dead_lettering":
                self._give_back(inp, "shutdown", detail)
        abandoned = [i for i in self.inputs.values()
                     if i.state in INPUT.terminal and i.downloads_left > 0]
        for inp in abandoned:  # their late completions are ignored (unknown serials)
            self._emit(fx.DeleteFiles(inp.paths, inp.dirs))
            inp.paths = ()
            self._forget(inp)
        if abandoned:
            self._log("warning", "downloads-abandoned",
                      f"{len(abandoned)} download(s) still running at the end of the "
                      "shutdown grace were abandoned")

    def _abandon_output(self, out: Output) -> None:
        """Forget an output whose inputs are being given back: no publish of it is awaited,
        its local files (if not uploaded yet) are deleted."""
        self.publishes = {pid: p for pid, p in self.publishes.items()
                          if p.kind == "dead_letter" or p.owner != out.serial}
        files_local = out.state == "received"
        self._fire(OUTPUT, out, "fail")
        self._log("warning", "output-abandoned", "shutdown grace over before the output "
                  "was stored and published; its inputs are requeued", out.fragment_id)
        local = [f.path for f in out.files if inside(self.cfg.volume, f.path)]
        if files_local and local:
            self._emit(fx.DeleteFiles(tuple(local)))
        for inp in self._gated(out):
            inp.unuploaded.discard(out.serial)
            inp.unrecorded.discard(out.serial)
        self._forget(out)

    def _on_grace_expired(self) -> None:
        self._stop(EXIT_TRANSFORMATION, "transformation-lost",
                   f"the transformation did not reconnect within "
                   f"{self.cfg.transformation_grace:g}s")

    def _advance(self) -> None:
        """After every event: dispatch, send the kill when due, exit when drained."""
        if self.intake_ended and self.broker_up and not (self.consuming or self.cancelling):
            self._after_intake()
        self._steer_intake()
        self._dispatch_ready()
        state = self.step.state
        if state == "input_ended" and not self._pending_dispatch():
            self._fire(STEP, self.step, "send_kill")
            state = self.step.state
        if state in ("kill_sent", "transformation_done"):
            for conn in self.tts:
                if conn not in self.killed:
                    self.killed.add(conn)
                    self._emit(fx.SendFrame(conn, KILL_FRAME))
        if state == "transformation_done" and (not self.fts or "fts_close" not in
                                               self.deadlines):
            self.deadlines.pop("fts_close", None)
            self._finish_unfinished()
        if state in ("transformation_done", "stopping") and self._drained():
            if self.exit_code is None:
                self.exit_code = EXIT_OK
            self._fire(STEP, self.step, "exit")
            self.deadlines.clear()
            if self.bucket_dirs:
                self._emit(fx.DeleteFiles((), tuple(sorted(self.bucket_dirs))))
            self._emit(fx.Exit(self.exit_code, self.exit_reason or "done"))
            return
        self._watch_stuck()

    def _after_intake(self) -> None:
        """Nothing more can be delivered here: what waited for a delivery is settled.

        A void input that finished waits no longer (its delivery went to another consumer,
        whose outputs have the same ids); the killed predecessor's knowledge and leftovers
        are no use any more.
        """
        waiting = [i for i in self.inputs.values() if not i.tag and i.state == "published"]
        for inp in waiting:
            self._release(inp)
        if waiting:
            self._log("info", "released", f"{len(waiting)} input(s) finished here after the "
                      "broker connection was lost were not delivered here again (another "
                      "consumer had them); their outputs are published with the same ids")
        self.resume_inputs.clear()
        self.resume_outputs.clear()
        if self.leftovers:
            files = tuple(p for f, _ in self.leftovers.values() for p in f)
            dirs = tuple(d for _, ds in self.leftovers.values() for d in ds)
            self.leftovers.clear()
            self._emit(fx.DeleteFiles(files, dirs))

    # --- a restart on the same volume (sidecar/resume.py) -----------------------------

    def _on_resume(self, e: ev.Resume) -> None:
        if self.step.state != "starting" or self.by_fragment or self.resume_inputs:
            self._log("warning", "resume-late", "resume knowledge after the start; ignored")
            return
        self.resume_inputs = {fid: (digest, tuple(outs)) for fid, digest, outs in e.inputs}
        self.resume_outputs = {fid: (stage, queue, descriptor.encode("utf-8"))
                               for fid, stage, queue, descriptor in e.outputs}
        self.leftovers = {fid: (tuple(files), tuple(dirs)) for fid, files, dirs in e.later}
        for d in (*e.delete_dirs, *(d for _, _, ds in e.later for d in ds)):
            parent = posixpath.dirname(d)
            if posixpath.dirname(parent) == self.cfg.volume.rstrip("/"):
                self.bucket_dirs.add(parent)  # <volume>/<bucket>, removed at exit if empty
        if e.delete or e.delete_dirs:
            self._emit(fx.DeleteFiles(e.delete, e.delete_dirs))
        self._log("info", "resuming",
                  f"journal run {e.run} of a killed sidecar on this volume: "
                  f"{len(self.resume_inputs)} input(s) finished with their outputs in S3 "
                  f"(republished and acked when delivered again, not processed again), "
                  f"{len(e.delete)} leftover file(s) deleted, {len(self.leftovers)} "
                  "input(s) left for the transformation")

    def _resume_input(self, inp: Input, output_ids: tuple[str, ...],
                      leftover: tuple[tuple[str, ...], tuple[str, ...]] | None) -> None:
        """done_with came before the restart and every output is uploaded: publish what was
        not confirmed (identical bytes, same message ids) and ack, without the
        transformation."""
        self._fire(INPUT, inp, "resume")
        if leftover is not None:
            self._emit(fx.DeleteFiles(*leftover))
        outputs = 0
        for oid in output_ids:
            stage, queue, descriptor = self.resume_outputs.get(oid, ("recorded", "", b""))
            if stage == "recorded":
                continue
            out = next((o for o in self.outputs.values() if o.fragment_id == oid), None)
            if out is None:
                out = self._resumed_output(oid, stage, queue, descriptor)
            out.gates.add(inp.serial)
            inp.unrecorded.add(out.serial)
            if out.state == "received":  # pragma: no cover - resumed outputs are uploaded
                inp.unuploaded.add(out.serial)
            outputs += 1
        self._log("info", "resumed", f"processed before the restart; {outputs} output(s) "
                  "to publish again, then acked", inp.fragment_id)
        self._progress(inp)

    def _resumed_output(self, oid: str, stage: str, queue: str, descriptor: bytes) -> Output:
        data = json.loads(descriptor)
        meta = data.get("metadata") or {}
        out = Output(serial=self._new_serial(), state=stage, fragment_id=oid,
                     remote=tuple(RemoteFile(f["name"], f["path"], f["bucket"])
                                  for f in data.get("files") or ()),
                     predecessors=tuple(meta.get("predecessors") or ()), queue=queue,
                     target_queue=meta.get("target_queue"), custom=meta.get("custom"),
                     descriptor=descriptor)
        self._track_new(OUTPUT, out)
        if stage == "uploaded":
            self._publish(PendingPublish("descriptor", out.serial, queue, descriptor, oid, ()))
        else:
            self._publish(PendingPublish("lineage", out.serial, self.cfg.lineage_queue,
                                         encode_lineage(self.cfg.step, descriptor), oid, ()))
        return out

    def _prune_resume_outputs(self) -> None:
        """Keep only the outputs some remembered input still names (bounded knowledge)."""
        named = {oid for _, outs in self.resume_inputs.values() for oid in outs}
        for oid in [o for o in self.resume_outputs if o not in named]:
            del self.resume_outputs[oid]

    def _pending_dispatch(self) -> bool:
        counts = self.states[INPUT.name]
        return any(counts[s] > 0 for s in _PRE_DISPATCH)

    def _finish_unfinished(self) -> None:
        """The transformation said it is complete: an input it never finished goes back."""
        unfinished = [i for i in self.inputs.values() if i.state == "dispatched"]
        for inp in unfinished:
            self._give_back(inp, "unfinished",
                            "the transformation completed without done_with for this input")
        if unfinished:
            self.exit_code = max(self.exit_code or 0, EXIT_TRANSFORMATION)
            self.exit_reason = (f"{len(unfinished)} input(s) were never finished by the "
                                "transformation; returned to the queue")

    def _drained(self) -> bool:
        return not self.inputs and not self.outputs and not self.publishes


def _terminal(model: Input | Output) -> bool:
    return model.state in (INPUT.terminal if isinstance(model, Input) else OUTPUT.terminal)


def _fragment_of(model: Tracked) -> str:
    if isinstance(model, Input):
        return model.fragment_id
    if isinstance(model, Output):
        return model.fragment_id
    return ""
