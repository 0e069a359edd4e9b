"""What one call of ``Core.handle`` produces, shared by every component of the core.

The clock of the call, the effects in order, the transitions made, and the count of every
log code (kept across calls, for summaries and metrics). Components get the one ``Emitter``
at construction and append to it; nothing else is shared between them.
"""

from __future__ import annotations

from collections import Counter

from states import InvalidTransition, Lifecycle

from . import effects as fx
from .models import Tracked, Transition

# Transition(...) without the named tuple's own __new__, a Python function (its _make does
# the same): one is made per transition, on the loop thread.
_new = tuple.__new__


class Emitter:
    def __init__(self) -> None:
        self.now = 0.0
        self.counts: Counter[str] = Counter()  # log codes, for summaries and metrics
        self.out: list[fx.Effect] = []
        self.transitions: list[Transition] = []

    def begin(self, now: float) -> list[fx.Effect]:
        """A new event: fresh lists (the caller keeps the last ones), the clock moves; the
        list the effects of this event go to."""
        out: list[fx.Effect] = []
        self.now, self.out, self.transitions = now, out, []
        return out

    def emit(self, effect: fx.Effect) -> None:
        self.out.append(effect)

    def log(self, level: str, code: str, message: str, fragment: str = "") -> None:
        self.counts[code] += 1
        self.out.append(fx.Log(level, code, message, fragment))

    def fire(self, lc: Lifecycle, model: Tracked, trigger: str, fragment: str) -> str | None:
        """Advance ``model`` (of fragment id ``fragment``, "" for the step) and record it;
        the state it left, or None when refused (a bug in the rules, logged: the core never
        crashes on one)."""
        source = model.state
        try:
            lc.fire(model, trigger)
        except InvalidTransition as err:
            self.log("error", "invalid-transition", str(err), fragment)
            return None
        self.record(lc.name, model, trigger, source, fragment)
        return source

    def record(self, machine: str, model: Tracked, trigger: str, source: str,
               fragment: str) -> None:
        model.history.append((model.state, self.now))
        self.transitions.append(_new(Transition, (machine, model.serial, fragment, trigger,
                                                  source, model.state)))
