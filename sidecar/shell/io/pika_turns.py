"""pika's IOLoop with a hook at the end of each loop turn, for the Runner's ``end_turn``.

A pika loop turn is one poll (its I/O handlers), then ``process_timeouts``: the callbacks
posted with ``add_callback_threadsafe``, then the timers that are due. The public way to
run something after all of that is ``call_later(0, ...)``: about 6 k instructions a turn
(a timer object, a heap push and pop, pika's debug logging checks), as much as an idle
sidecar's whole Runner per event. ``TurnLoop`` runs the callback right after pika's own
``process_timeouts`` instead: a flag test a turn.

``process_timeouts`` is pika's "[Extension]" method, which the poller calls through the
bound method it was given when the loop was built (pika 1.x: ``IOLoop._poller``,
``_PollerBase._process_timeouts``); that private wiring is contained here. The loop checks
at construction that its poller calls its own ``process_timeouts`` and otherwise falls back
to ``call_later(0, ...)``: the same order, at pika's public price.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pika.adapters.select_connection import IOLoop

log = logging.getLogger("sidecar.loop")


class TurnLoop(IOLoop):
    """An IOLoop whose ``at_turn_end`` runs a callback once the current turn's handlers,
    posted callbacks and due timers have run, before the next poll."""

    def __init__(self) -> None:
        super().__init__()
        self._turn_end: Callable[[], None] | None = None
        poller = getattr(self, "_poller", None)
        self.hooked = getattr(poller, "_process_timeouts", None) == self.process_timeouts
        if not self.hooked:
            log.debug("pika's poller does not call IOLoop.process_timeouts as expected: "
                      "the end of a loop turn is a zero-delay timer")

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once at the end of this loop turn (loop thread only; one
        callback at a time: the Runner arms it once per turn)."""
        if self.hooked:
            self._turn_end = callback
        else:
            self.call_later(0, callback)

    def process_timeouts(self) -> None:
        super().process_timeouts()
        end = self._turn_end
        if end is not None:
            self._turn_end = None
            end()
