"""The sidecar's decisions: events in, state-machine transitions, effects out. No I/O.

``Core.handle(event, now)`` is the only entry point. It is deterministic: the same events
with the same clock readings give the same transitions and the same effects, which is what
makes a recorded journal replayable. Every rule of the contract that is about *when*
something may happen (ack gating §16.8, the kill after the last fragment §12, giving work
back on a crash §16.5) lives here; the shell only moves bytes.

The core is a few components that own their state (``sidecar/core/parts.py`` lists them)
and the rule modules that decide, per event, what they do. ``Core`` maps each event type to
its rule, then makes the checks that follow every event (``_advance``).

Observers (metrics, /debug, the journal, OpenLineage, replay, the debugger, tests) read the
core only through the read-only properties and methods below, the observer API.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Set
from functools import partial
from typing import Any

from states import IntakeState as IS
from states import StepEvent, StepState

from . import broker, inputs, outputs, resume, stream, transformation
from . import effects as fx
from . import events as ev
from .models import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_TRANSFORMATION,
    KILL_FRAME,
    OUTPUT_INDEX_LIMIT,
    CoreConfig,
    Input,
    Intake,
    Output,
    PendingPublish,
    Tracked,
    Transition,
)
from .parts import Parts
from .snapshot import restore_into, snapshot

__all__ = ["EXIT_FATAL", "EXIT_OK", "EXIT_TRANSFORMATION", "KILL_FRAME", "OUTPUT_INDEX_LIMIT",
           "Core", "CoreConfig", "Input", "Output", "PendingPublish", "Tracked", "Transition"]

_KILLING = (StepState.KILL_SENT, StepState.TRANSFORMATION_DONE)  # the kill goes to every tts
_EXITING = (StepState.TRANSFORMATION_DONE, StepState.STOPPING)  # exit once drained
# Compared on every event: module constants, cheaper than a look-up in the table.
_EXITED, _ENDED, _INPUT_ENDED = StepState.EXITED, IS.ENDED, StepState.INPUT_ENDED
_TRANSFORMATION_DONE = StepState.TRANSFORMATION_DONE
# Nothing to wind down in these (the usual ones): no kill, no exit, no fts_close due yet.
_RUNNING = frozenset({StepState.STARTING, StepState.CONSUMING, StepState.DRAINING_QUEUE,
                      StepState.EXITED})


def _rules(p: Parts) -> dict[type, Callable[[Any], None]]:
    """Every event type and its rule."""
    return {
        ev.BrokerReady: partial(broker.on_broker_ready, p),
        ev.Delivered: partial(broker.on_delivered, p),
        ev.ConsumerStopped: partial(broker.on_consumer_stopped, p),
        ev.ConsumerCancelledByBroker: partial(broker.on_consumer_cancelled, p),
        ev.BrokerLost: partial(broker.on_broker_lost, p),
        ev.QueueInspected: partial(broker.on_queue_inspected, p),
        ev.PublishConfirmed: partial(outputs.on_confirmed, p),
        ev.PublishRejected: partial(outputs.on_rejected, p),
        ev.FileDownloaded: partial(inputs.on_downloaded, p),
        ev.DownloadFailed: partial(inputs.on_download_failed, p),
        ev.FileUploaded: partial(outputs.on_uploaded, p),
        ev.UploadFailed: partial(outputs.on_upload_failed, p),
        ev.Connected: partial(transformation.on_connected, p),
        ev.Disconnected: partial(transformation.on_disconnected, p),
        ev.FrameReceived: partial(transformation.on_frame, p),
        ev.FrameRejected: partial(transformation.on_frame_rejected, p),
        ev.UpstreamFinished: partial(stream.on_upstream_finished, p),
        ev.Fatal: partial(stream.on_fatal, p),
        ev.ShutdownRequested: partial(stream.on_shutdown, p),
        ev.Tick: partial(_on_tick, p),
        ev.VolumeSpace: partial(_on_volume_space, p),
        ev.Resume: partial(resume.on_resume, p),
    }


class Core:
    """The decisions of one sidecar process; every event type maps to one rule."""

    def __init__(self, config: CoreConfig):
        self.parts = Parts.build(config)
        self._handlers = _rules(self.parts)

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        """Consume one event; return the effects to perform, in order."""
        p = self.parts
        out = p.fx.begin(now)
        if p.step.model.state != _EXITED:
            self._handlers[type(event)](event)
            _advance(p)
        return out

    def snapshot(self) -> dict[str, Any]:
        """The complete state as JSON-ready data (see sidecar/core/snapshot.py)."""
        return snapshot(self.parts)

    @classmethod
    def restore(cls, config: CoreConfig, state: dict[str, Any]) -> Core:
        """A core that continues exactly where the snapshotted one was."""
        core = cls(config)
        restore_into(core.parts, state)
        return core

    # --- the observer API: read-only views (the live objects; do not change them) ---

    @property
    def cfg(self) -> CoreConfig:
        return self.parts.cfg

    @property
    def now(self) -> float:
        return self.parts.fx.now

    @property
    def transitions(self) -> list[Transition]:
        """The transitions of the last ``handle``."""
        return self.parts.fx.transitions

    @property
    def counts(self) -> Counter[str]:
        return self.parts.fx.counts

    @property
    def step(self) -> Tracked:
        return self.parts.step.model

    @property
    def exit_code(self) -> int | None:
        return self.parts.step.exit_code

    @property
    def upstream_finished(self) -> bool:
        return self.parts.step.upstream_finished

    @property
    def deadlines(self) -> Mapping[str, float]:
        return self.parts.step.deadlines

    def next_deadline(self) -> float | None:
        return self.parts.step.next_deadline()

    @property
    def inputs(self) -> Mapping[int, Input]:
        return self.parts.fragments.inputs

    @property
    def outputs(self) -> Mapping[int, Output]:
        return self.parts.fragments.outputs

    @property
    def states(self) -> Mapping[str, Counter[str]]:
        """Fragments in flight per lifecycle and state."""
        return self.parts.fragments.states

    @property
    def in_flight(self) -> int:
        return self.parts.fragments.in_flight

    def state_of(self, fragment_id: str) -> str:
        return self.parts.fragments.state_of(fragment_id)

    def fragment_of(self, serial: int) -> str:
        """For the logs of the transfers the core asked for by serial."""
        return self.parts.fragments.fragment_of(serial)

    def stuck(self) -> list[Input | Output]:
        return self.parts.fragments.stuck()

    @property
    def output_index(self) -> Mapping[tuple[str, ...], int]:
        return self.parts.ids.output_index

    @property
    def index_keys(self) -> Mapping[str, set[tuple[str, ...]]]:
        return self.parts.ids.index_keys

    @property
    def publishes(self) -> Mapping[int, PendingPublish]:
        return self.parts.publisher.publishes

    @property
    def intake(self) -> Intake:
        return self.parts.intake.model

    @property
    def broker_up(self) -> bool:
        return self.parts.intake.broker_up

    @property
    def consuming(self) -> bool:
        return self.parts.intake.consuming

    @property
    def cancelling(self) -> bool:
        return self.parts.intake.cancelling

    @property
    def paused(self) -> tuple[str, ...]:
        return self.parts.intake.paused

    @property
    def volume_free(self) -> int | None:
        return self.parts.intake.volume_free

    @property
    def volume_low(self) -> bool:
        return self.parts.intake.volume_low

    @property
    def tts(self) -> Sequence[int]:
        return self.parts.link.tts

    @property
    def fts(self) -> Set[int]:
        return self.parts.link.fts

    @property
    def resume_inputs(self) -> Mapping[str, tuple[str, tuple[str, ...]]]:
        return self.parts.restart.resume_inputs

    @property
    def resume_outputs(self) -> Mapping[str, tuple[str, str, bytes]]:
        return self.parts.restart.resume_outputs

    @property
    def leftovers(self) -> Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        return self.parts.restart.leftovers


# --- rules of the core itself: the clock, and the checks after every event ---


def _on_volume_space(p: Parts, e: ev.VolumeSpace) -> None:
    p.intake.volume_space(e.free_bytes)


def _on_inspect_due(p: Parts) -> None:
    if p.intake.broker_up:
        p.fx.emit(fx.InspectQueue())


def _nothing(p: Parts) -> None:
    """fts_close: _advance sees it gone."""


# What each deadline's expiry does; an unknown name (a damaged snapshot) is a KeyError.
_DUE: dict[str, Callable[[Parts], None]] = {
    "inspect": _on_inspect_due,
    "grace": stream.on_grace_expired,
    "connect": transformation.on_connect_timeout,
    "shutdown": stream.on_shutdown_grace_over,
    "fts_close": _nothing,
    "stuck": lambda p: p.fragments.report_stuck(),
}


def _on_tick(p: Parts, _: ev.Tick) -> None:
    for name in p.step.due(p.fx.now):
        p.step.expire(name)
        _DUE[name](p)


def _advance(p: Parts) -> None:
    """After every event: dispatch, send the kill when due, exit when drained."""
    intake, link, step = p.intake, p.link, p.step
    if intake.model.state == _ENDED:  # no consumer, for good; the broker is there
        inputs.after_intake(p)
    intake.steer(link.orphaned)
    if link.ready:
        transformation.dispatch_ready(p)
    if step.model.state not in _RUNNING and _wind_down(p):
        return
    if p.cfg.stuck_after:  # the "stuck" deadline: when the first fragment would be stuck
        due = p.fragments.stuck_due()
        if step.deadlines.get("stuck") != due:  # often the same: spare the call
            step.set_deadline("stuck", due)


def _wind_down(p: Parts) -> bool:
    """The end of the step: the kill once nothing waits for dispatch, the exit once
    drained. True when it exited."""
    step = p.step
    state = step.model.state
    if state == _INPUT_ENDED and not p.fragments.pending_dispatch():
        step.fire(StepEvent.SEND_KILL)
        state = step.model.state
    if state in _KILLING:
        for conn in p.link.to_kill():
            p.fx.emit(fx.SendFrame(conn, KILL_FRAME))
    if state == _TRANSFORMATION_DONE and (not p.link.fts or "fts_close" not in step.deadlines):
        step.cancel("fts_close")
        stream.finish_unfinished(p)
    if state in _EXITING and stream.drained(p):
        code = step.default_exit(EXIT_OK)
        step.fire(StepEvent.EXIT)
        step.clear_deadlines()
        if step.bucket_dirs:
            p.fx.emit(fx.DeleteFiles((), tuple(sorted(step.bucket_dirs))))
        p.fx.emit(fx.Exit(code, step.exit_reason or "done"))
        return True
    return False
