"""The fragment table: the inputs and outputs in flight, and everything indexed on them.

It owns the models' membership (by serial, the inputs by fragment id), the count of
fragments in each state (for metrics and the end of the stream), the serials, and the stuck
watch. Every transition of an input or output goes through ``fire`` here, so the counts,
the history, the recorded transitions and the watch cannot drift apart.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from typing import Final

from states import INPUT, OUTPUT, Lifecycle

from .emitter import Emitter
from .models import _PRE_DISPATCH, _UNPROCESSED, Input, Output, _terminal


class Fragments:
    def __init__(self, fx: Emitter, stuck_after: float):
        self._fx = fx
        self._stuck_after = stuck_after
        self._inputs: dict[int, Input] = {}
        self._outputs: dict[int, Output] = {}
        # The same dicts, read-only for others. Attributes, not properties: the rules read
        # them on most events. Never rebound (Final), so load() refills them in place.
        self.inputs: Final[Mapping[int, Input]] = self._inputs
        self.outputs: Final[Mapping[int, Output]] = self._outputs
        self._by_fragment: dict[str, int] = {}
        self._states: dict[str, Counter[str]] = {lc.name: Counter() for lc in (INPUT, OUTPUT)}
        self._serial = 0
        # The fragments the stuck watch waits on (in flight, not terminal, not reported
        # stuck in their current state), oldest state entry first: a fragment moves to the
        # end when it changes state, so the watch reads its deadline off the first one
        # instead of scanning every fragment after every event. Derived: rebuilt on restore.
        self._entered: OrderedDict[Input | Output, None] = OrderedDict()

    # --- read-only views (the rules, the snapshot and observers) ---

    @property
    def by_fragment(self) -> Mapping[str, int]:
        return self._by_fragment

    @property
    def states(self) -> Mapping[str, Counter[str]]:
        return self._states

    @property
    def serial(self) -> int:
        return self._serial

    @property
    def entered(self) -> Iterator[Input | Output]:
        """What the stuck watch waits on, oldest state entry first."""
        return iter(self._entered)

    @property
    def in_flight(self) -> int:
        return len(self._inputs) + len(self._outputs)

    def input_named(self, fragment_id: str) -> Input | None:
        """The input in flight that owns this fragment id."""
        return self._inputs.get(self._by_fragment.get(fragment_id, -1))

    def output_named(self, fragment_id: str) -> Output | None:
        return next((o for o in self._outputs.values() if o.fragment_id == fragment_id), None)

    def state_of(self, fragment_id: str) -> str:
        """The state of the input (else output) with this id in flight, or ""."""
        inp = self.input_named(fragment_id)
        if inp is not None:
            return inp.state
        out = self.output_named(fragment_id) if fragment_id else None
        return out.state if out is not None else ""

    def fragment_of(self, serial: int) -> str:
        """The id of the input or output with this serial in flight, or ""."""
        model = self._inputs.get(serial) or self._outputs.get(serial)
        return model.fragment_id if model is not None else ""

    def gated(self, out: Output) -> list[Input]:
        """The inputs in flight whose ack waits for ``out`` (§16.8)."""
        return [i for s in sorted(out.gates) if (i := self._inputs.get(s)) is not None]

    def pending_dispatch(self) -> bool:
        counts = self._states[INPUT.name]
        return any(counts[s] > 0 for s in _PRE_DISPATCH)

    def in_state(self, state: str) -> list[Input]:
        return [i for i in self._inputs.values() if i.state == state]

    # --- changes ---

    def new_serial(self) -> int:
        self._serial += 1
        return self._serial

    def add(self, lc: Lifecycle, model: Input | Output) -> None:
        """A new fragment in flight, in its initial state."""
        if isinstance(model, Input):
            self._inputs[model.serial] = model
        else:
            self._outputs[model.serial] = model
        self._states[lc.name][model.state] += 1
        self._fx.record(lc.name, model, "new", "", model.fragment_id)
        if self._stuck_after:
            self._rewatch(lc, model)

    def index(self, inp: Input) -> None:
        """``inp`` owns its fragment id: done_with, outputs and duplicates find it."""
        self._by_fragment[inp.fragment_id] = inp.serial
        inp.indexed = True

    def gate(self, out: Output) -> None:
        """§16.8: an output received before its predecessor's done_with holds that ack."""
        for p in set(out.predecessors):
            inp = self.input_named(p)
            if inp is not None and inp.state in _UNPROCESSED:
                out.gates.add(inp.serial)
                inp.unuploaded.add(out.serial)
                inp.unrecorded.add(out.serial)

    def fire(self, lc: Lifecycle, model: Input | Output, trigger: str) -> None:
        source = self._fx.fire(lc, model, trigger, model.fragment_id)
        if source is None:
            return
        dest = model.state
        counts = self._states[lc.name]
        counts[source] -= 1
        counts[dest] += 1
        if self._stuck_after:
            self._rewatch(lc, model)

    def forget(self, model: Input | Output) -> None:
        self._entered.pop(model, None)
        if isinstance(model, Input):
            self._inputs.pop(model.serial, None)
            if model.indexed:
                self._by_fragment.pop(model.fragment_id, None)
            self._states[INPUT.name][model.state] -= 1
        else:
            self._outputs.pop(model.serial, None)
            self._states[OUTPUT.name][model.state] -= 1

    # --- the stuck watch (docs/operations.md) ---

    def _rewatch(self, lc: Lifecycle, model: Input | Output) -> None:
        """``model`` just entered a state: it is now the newest fragment the watch waits on,
        unless it is finished (or no longer in flight)."""
        entered = self._entered
        if model.state in lc.terminal:
            entered.pop(model, None)
        elif model in entered:  # in flight: forget takes it out
            entered.move_to_end(model)
        elif (self._inputs if lc is INPUT else self._outputs).get(model.serial) is model:
            entered[model] = None

    def stuck_due(self) -> float | None:
        """The first moment a fragment would be stuck, if the watch waits on any."""
        oldest = next(iter(self._entered), None)
        return None if oldest is None else oldest.history[-1][1] + self._stuck_after

    def _tracked(self) -> itertools.chain[Input | Output]:
        return itertools.chain(self._inputs.values(), self._outputs.values())

    def report_stuck(self) -> None:
        now = self._fx.now
        for model in self._tracked():
            since = model.history[-1][1]
            if (model.stuck_reported == len(model.history) or _terminal(model)
                    or now - since < self._stuck_after):
                continue
            model.stuck_reported = len(model.history)
            self._entered.pop(model, None)
            kind = "input" if isinstance(model, Input) else "output"
            self._fx.log("warning", f"stuck-{kind}-{model.state}",
                         f"{kind} fragment {model.state} for {now - since:.0f}s "
                         f"(SIDECAR_STUCK_AFTER={self._stuck_after:g}s)", model.fragment_id)

    def stuck(self) -> list[Input | Output]:
        """The fragments reported stuck that are still in the state they were stuck in."""
        return [m for m in self._tracked()
                if m.stuck_reported == len(m.history) and not _terminal(m)]

    # --- restore (sidecar/core/snapshot.py) ---

    def load(self, inputs: list[Input], outputs: list[Output], by_fragment: dict[str, int],
             states: dict[str, Counter[str]], serial: int) -> None:
        self._inputs.clear()
        self._inputs.update((i.serial, i) for i in inputs)
        self._outputs.clear()
        self._outputs.update((o.serial, o) for o in outputs)
        self._by_fragment = by_fragment
        self._states = states
        self._serial = serial
        self._rebuild_stuck_watch()

    def _rebuild_stuck_watch(self) -> None:
        """Derive what the watch waits on from the models.

        The clock never runs backwards, so ordering by the time each model entered its
        state is the order in which they would have been moved to the end.
        """
        waiting = [m for m in self._tracked()
                   if m.stuck_reported != len(m.history) and not _terminal(m)]
        waiting.sort(key=lambda m: m.history[-1][1])
        self._entered = OrderedDict.fromkeys(waiting) if self._stuck_after else OrderedDict()
