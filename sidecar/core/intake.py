"""Intake control and stuck fragments (docs/operations.md): pause consuming while the
transformation is away or the volume is nearly full; report fragments too long in one
state.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

from states import InputState
from states import IntakeEvent as IE
from states import IntakeState as IS

from . import effects as fx
from . import events as ev
from .base import CoreBase
from .models import Input, Output, _fragment_of, _terminal

# Compared on every event: module constants, cheaper than a look-up in the table.
_CONSUMING = IS.CONSUMING


class IntakeRules(CoreBase):
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
        state = self.intake.state
        if state == _CONSUMING:
            if not (self.volume_low or self.orphaned):
                return  # the usual case, after every event: no reason to pause
        elif state != IS.PAUSED and state != IS.PAUSING:
            return  # not started, ended, or the broker is away
        reasons = self._pause_reasons()
        if reasons:
            self.paused = reasons
            if state == IS.CONSUMING:
                self._log("warning", "intake-paused",
                          "stopped consuming: " + ", ".join(reasons))
                self._intake_fire(IE.PAUSE)
                self._emit(fx.StopConsuming())
        elif state == IS.PAUSED:
            self.paused = ()
            self._intake_fire(IE.CONSUME)
            self._log("info", "intake-resumed", "consuming again")
            self._emit(fx.StartConsuming(self.cfg.prefetch))

    def _after_intake(self) -> None:
        """Nothing more can be delivered here: what waited for a delivery is settled.

        A void input that finished waits no longer (its delivery went to another consumer,
        whose outputs have the same ids); the killed predecessor's knowledge and leftovers
        are no use any more.
        """
        waiting = [i for i in self.inputs.values() if not i.tag and i.state == InputState.PUBLISHED]
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

    def _tracked(self) -> itertools.chain[Input | Output]:
        return itertools.chain(self.inputs.values(), self.outputs.values())

    def _watch_stuck(self) -> None:
        """Keep the "stuck" deadline at the first moment a fragment would be stuck."""
        if not self.cfg.stuck_after:
            return
        oldest = next(iter(self._entered), None)
        if oldest is None:
            self.deadlines.pop("stuck", None)
        else:
            self.deadlines["stuck"] = oldest.history[-1][1] + self.cfg.stuck_after

    def rebuild_stuck_watch(self) -> None:
        """Derive what the watch waits on from the models (a core restored from a snapshot).

        The clock never runs backwards, so ordering by the time each model entered its
        state is the order in which they would have been moved to the end.
        """
        waiting = [m for m in self._tracked()
                   if m.stuck_reported != len(m.history) and not _terminal(m)]
        waiting.sort(key=lambda m: m.history[-1][1])
        self._entered = OrderedDict.fromkeys(waiting) if self.cfg.stuck_after else OrderedDict()

    def _report_stuck(self) -> None:
        for model in self._tracked():
            since = model.history[-1][1]
            if (model.stuck_reported == len(model.history) or _terminal(model)
                    or self.now - since < self.cfg.stuck_after):
                continue
            model.stuck_reported = len(model.history)
            self._entered.pop(model, None)
            kind = "input" if isinstance(model, Input) else "output"
            self._log("warning", f"stuck-{kind}-{model.state}",
                      f"{kind} fragment {model.state} for {self.now - since:.0f}s "
                      f"(SIDECAR_STUCK_AFTER={self.cfg.stuck_after:g}s)", _fragment_of(model))

    def stuck(self) -> list[Input | Output]:
        """The fragments reported stuck that are still in the state they were stuck in."""
        return [m for m in self._tracked()
                if m.stuck_reported == len(m.history) and not _terminal(m)]
