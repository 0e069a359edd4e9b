"""Intake: the consumer on the input queue and the broker connection it lives on
(``states.INTAKE``, docs/reliability.md), and intake control (docs/operations.md): pause
consuming while the transformation is away or the volume is nearly full.

Every intake transition is fired here, with the consumer effect it implies
(StartConsuming, StopConsuming); the rules say when, this says how.
"""

from __future__ import annotations

from typing import Final

from states import BROKER_UP, CANCELLING, INTAKE, InvalidTransition
from states import IntakeEvent as IE
from states import IntakeState as IS

from . import effects as fx
from .emitter import Emitter
from .models import CoreConfig, Intake

# The states the table has no `end` from: the intake has ended, or is ending, already.
_ENDED = frozenset(s for s in INTAKE.states if (s, IE.END) not in INTAKE.next_state)
_WITH_CONSUMER = (IS.CONSUMING, IS.ADOPTING)
# Compared on every event: module constants, cheaper than a look-up in the table.
_CONSUMING = IS.CONSUMING


class IntakeControl:
    def __init__(self, cfg: CoreConfig, fx: Emitter):
        self._cfg = cfg
        self._fx = fx
        # The model of states.INTAKE: a plain attribute, never rebound (Final), read on
        # every event (a property would double the cost of that read).
        self.model: Final[Intake] = Intake()
        self._volume_free: int | None = None
        self._volume_low = False
        self._paused: tuple[str, ...] = ()  # why consuming is paused, if it is

    # --- read-only views ---

    @property
    def state(self) -> str:
        return self.model.state

    @property
    def broker_up(self) -> bool:
        return self.model.state in BROKER_UP

    @property
    def consuming(self) -> bool:
        return self.model.state in _WITH_CONSUMER

    @property
    def cancelling(self) -> bool:
        return self.model.state in CANCELLING

    @property
    def paused(self) -> tuple[str, ...]:
        return self._paused

    @property
    def volume_free(self) -> int | None:
        return self._volume_free

    @property
    def volume_low(self) -> bool:
        return self._volume_low

    # --- the machine ---

    def fire(self, trigger: str) -> None:
        """Advance the intake; a refused transition is logged, like the fragments'."""
        try:
            INTAKE.fire(self.model, trigger)
        except InvalidTransition as err:
            self._fx.log("error", "invalid-transition", str(err))

    def open(self, orphaned: bool) -> None:
        """The broker is ready for the first time: consume, unless a reason holds it."""
        reasons = self._pause_reasons(orphaned)
        if reasons:
            self._paused = reasons
            self.fire(IE.HOLD)
            self._fx.log("warning", "intake-paused", "not consuming yet: " + ", ".join(reasons))
        else:
            self.fire(IE.CONSUME)
            self._fx.emit(fx.StartConsuming(self._cfg.prefetch))

    def reopen(self, orphaned: bool) -> None:
        """The broker is back while the input goes on: consume again, unless paused."""
        reasons = self._pause_reasons(orphaned)
        if reasons:
            self._paused = reasons
            self.fire(IE.HOLD)
        else:
            self._paused = ()
            self.fire(IE.CONSUME)
            self._fx.emit(fx.StartConsuming(self._cfg.prefetch))

    def adopt(self) -> None:
        """The input had ended, but a loss put our unacked deliveries back in the queue:
        consume once more, only to take them back (and ask how many are there)."""
        self.fire(IE.ADOPT)
        self._fx.emit(fx.StartConsuming(self._cfg.prefetch))
        self._fx.emit(fx.InspectQueue())

    def reconnected(self) -> None:
        """Back after the end, with nothing to take back: stays ended."""
        self.fire(IE.RECONNECTED)

    def stop_adopting(self) -> None:
        if self.model.state == IS.ADOPTING:
            self.fire(IE.STOP_ADOPTING)
            self._fx.emit(fx.StopConsuming())

    def consumer_stopped(self) -> str | None:
        """Our basic.cancel is confirmed: the state it was in flight in, or None for a
        stray confirmation (the shell posts one per cancel)."""
        state = self.model.state
        if state not in CANCELLING:
            return None
        self.fire(IE.CONSUMER_STOPPED)
        return state

    def consumer_cancelled(self) -> None:
        """The broker cancelled our consumer (the queue was deleted?)."""
        if self.model.state in _WITH_CONSUMER:
            self.fire(IE.CONSUMER_CANCELLED)

    def lost(self) -> None:
        if self.model.state in BROKER_UP:
            self.fire(IE.BROKER_LOST)

    def end(self) -> None:
        """No more intake, for good (end of the input, or stopping)."""
        state = self.model.state
        if state in _ENDED:
            return
        self.fire(IE.END)  # a pause's cancel in flight now ends the input
        if state in _WITH_CONSUMER:
            self._fx.emit(fx.StopConsuming())

    # --- intake control (docs/operations.md) ---

    def volume_space(self, free_bytes: int) -> None:
        self._volume_free = free_bytes
        limit = self._cfg.volume_min_free
        if not limit:
            return
        if not self._volume_low and free_bytes < limit:
            self._volume_low = True
            self._fx.log("warning", "volume-low",
                         f"{free_bytes} bytes free on the volume, below "
                         f"SIDECAR_VOLUME_MIN_FREE ({limit})")
        elif self._volume_low and free_bytes >= limit + limit // 4:
            self._volume_low = False
            self._fx.log("info", "volume-ok", f"{free_bytes} bytes free on the volume again")

    def _pause_reasons(self, orphaned: bool) -> tuple[str, ...]:
        reasons = []
        if orphaned and self._cfg.pause_when_orphaned:
            reasons.append("transformation-absent")
        if self._volume_low:
            reasons.append("volume-low")
        return tuple(reasons)

    def steer(self, orphaned: bool) -> None:
        """Pause consuming (basic.cancel) while the transformation is gone or the volume is
        nearly full; resume (basic.qos + basic.consume) when neither holds any more.

        Deliveries already on their way when the cancel is sent are processed normally;
        the unacked ones stay ours. A resume waits for the cancel's confirmation, so the
        consumer tag is never reused while the broker still knows it.
        """
        state = self.model.state
        if state == _CONSUMING:
            if not (self._volume_low or orphaned):
                return  # the usual case, after every event: no reason to pause
        elif state != IS.PAUSED and state != IS.PAUSING:
            return  # not started, ended, or the broker is away
        reasons = self._pause_reasons(orphaned)
        if reasons:
            self._paused = reasons
            if state == IS.CONSUMING:
                self._fx.log("warning", "intake-paused",
                             "stopped consuming: " + ", ".join(reasons))
                self.fire(IE.PAUSE)
                self._fx.emit(fx.StopConsuming())
        elif state == IS.PAUSED:
            self._paused = ()
            self.fire(IE.CONSUME)
            self._fx.log("info", "intake-resumed", "consuming again")
            self._fx.emit(fx.StartConsuming(self._cfg.prefetch))

    # --- restore ---

    def load(self, state: str, paused: tuple[str, ...], volume_free: int | None,
             volume_low: bool) -> None:
        self.model.state = state
        self._paused = paused
        self._volume_free = volume_free
        self._volume_low = volume_low
