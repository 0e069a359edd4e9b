"""The core's state and its bookkeeping: the entry point, firing transitions, publishing.

The rules live in the sibling modules, one concern each, as mixins of ``CoreBase``;
``sidecar.core.Core`` puts them together and maps every event to its rule.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from typing import Any

from states import (
    BROKER_UP,
    CANCELLING,
    INPUT,
    INTAKE,
    OUTPUT,
    STEP,
    InvalidTransition,
    Lifecycle,
    StepState,
)
from states import IntakeState as IS

from . import effects as fx
from . import events as ev
from .models import (
    CoreConfig,
    Input,
    Intake,
    Output,
    PendingPublish,
    Tracked,
    Transition,
    _fragment_of,
)

# Compared on every event: module constants, cheaper than a look-up in the table.
_EXITED = StepState.EXITED


class CoreBase:
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
        # the consumer and the broker connection (states.INTAKE, docs/reliability.md)
        self.intake = Intake()
        # what a killed predecessor on this volume had done (ev.Resume, sidecar/shell/recovery.py):
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
        # The fragments the stuck watch waits on (in flight, not terminal, not reported
        # stuck in their current state), oldest state entry first: a fragment moves to the
        # end when it changes state, so the watch reads its deadline off the first one
        # instead of scanning every fragment after every event. Derived: rebuilt on restore.
        self._entered: OrderedDict[Input | Output, None] = OrderedDict()

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        """Consume one event; return the effects to perform, in order."""
        self.now = now
        self._out = []
        self.transitions = []
        if self.step.state != _EXITED:
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

    def fragment_of(self, serial: int) -> str:
        """The id of the input or output with this serial in flight, or "" (for the logs
        of the transfers the core asked for by serial)."""
        model = self.inputs.get(serial) or self.outputs.get(serial)
        return model.fragment_id if model is not None else ""

    # Read-only views of the intake for observers (/debug, tests); the rules read its state.
    @property
    def broker_up(self) -> bool:
        return self.intake.state in BROKER_UP

    @property
    def consuming(self) -> bool:
        return self.intake.state in (IS.CONSUMING, IS.ADOPTING)

    @property
    def cancelling(self) -> bool:
        return self.intake.state in CANCELLING

    @property
    def in_flight(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def snapshot(self) -> dict[str, Any]:
        """The complete state as JSON-ready data (see sidecar/core/snapshot.py)."""
        from .snapshot import snapshot

        return snapshot(self)

    @classmethod
    def restore(cls, config: CoreConfig, state: dict[str, Any]) -> CoreBase:
        """A core that continues exactly where the snapshotted one was."""
        from .snapshot import restore

        return restore(config, state)

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
        if lc is not STEP and self.cfg.stuck_after:
            self._rewatch(lc, model)

    def _intake_fire(self, trigger: str) -> None:
        """Advance the intake; a refused transition is logged, like ``_fire``'s."""
        try:
            INTAKE.fire(self.intake, trigger)
        except InvalidTransition as err:
            self._log("error", "invalid-transition", str(err))

    def _new_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _publish(self, pending: PendingPublish) -> None:
        """Register a publish; it is sent now, or when the broker is back (BrokerReady)."""
        self._publish_id += 1
        self.publishes[self._publish_id] = pending
        if self.intake.state in BROKER_UP:
            self._send_publish(self._publish_id, pending)

    def _send_publish(self, publish_id: int, pending: PendingPublish) -> None:
        self._emit(fx.Publish(publish_id, pending.queue, pending.body, pending.message_id,
                              pending.headers))

    def _track_new(self, lc: Lifecycle, model: Input | Output) -> None:
        table: dict = self.inputs if lc is INPUT else self.outputs
        table[model.serial] = model
        self.states[lc.name][model.state] += 1
        model.history.append((model.state, self.now))
        self.transitions.append(Transition(lc.name, model.serial, _fragment_of(model), "new",
                                           "", model.state))
        if self.cfg.stuck_after:
            self._rewatch(lc, model)

    def _rewatch(self, lc: Lifecycle, model: Input | Output) -> None:
        """``model`` just entered a state: it is now the newest fragment the watch waits on,
        unless it is finished (or no longer in flight)."""
        entered = self._entered
        if model.state in lc.terminal:
            entered.pop(model, None)
        elif model in entered:  # in flight: _forget takes it out
            entered.move_to_end(model)
        elif (self.inputs if lc is INPUT else self.outputs).get(model.serial) is model:
            entered[model] = None

    def _forget(self, model: Input | Output) -> None:
        self._entered.pop(model, None)
        if isinstance(model, Input):
            self.inputs.pop(model.serial, None)
            if model.indexed:
                self.by_fragment.pop(model.fragment_id, None)
            self.states[INPUT.name][model.state] -= 1
        else:
            self.outputs.pop(model.serial, None)
            self.states[OUTPUT.name][model.state] -= 1
