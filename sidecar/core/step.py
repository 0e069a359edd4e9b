"""The step: the sidecar process's lifecycle (``states.STEP``), its deadlines, how it will
exit, and what it removes from the volume at exit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Final

from states import STEP

from .emitter import Emitter
from .models import Tracked


class Step:
    def __init__(self, fx: Emitter):
        self._fx = fx
        # The model of states.STEP. A plain attribute, never rebound (Final): the core reads
        # its state on every event, and a property would double the cost of that read.
        self.model: Final[Tracked] = Tracked(serial=0, state=STEP.initial)
        self._deadlines: dict[str, float] = {}  # name -> time; insertion order is kept
        # The same dict, read-only for others; an attribute (read after every event), never
        # rebound (Final), so load() refills it in place.
        self.deadlines: Final[Mapping[str, float]] = self._deadlines
        self._exit_code: int | None = None
        self._exit_reason = ""
        self._upstream_finished = False
        self._bucket_dirs: set[str] = set()  # removed at exit when empty

    # --- read-only views ---

    @property
    def state(self) -> str:
        return self.model.state

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    @property
    def exit_reason(self) -> str:
        return self._exit_reason

    @property
    def upstream_finished(self) -> bool:
        return self._upstream_finished

    @property
    def bucket_dirs(self) -> Set[str]:
        return self._bucket_dirs

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    # --- changes ---

    def fire(self, trigger: str) -> None:
        self._fx.fire(STEP, self.model, trigger, "")

    def set_deadline(self, name: str, at: float | None) -> None:
        """Due at ``at`` (kept in place if already set); None: not due any more."""
        if at is None:
            self._deadlines.pop(name, None)
        else:
            self._deadlines[name] = at

    def cancel(self, name: str) -> None:
        self._deadlines.pop(name, None)

    def due(self, now: float) -> list[str]:
        return [name for name, t in self._deadlines.items() if t <= now]

    def expire(self, name: str) -> None:
        del self._deadlines[name]

    def clear_deadlines(self) -> None:
        self._deadlines.clear()

    def fail(self, code: int, reason: str) -> None:
        """The worst exit code wins; the first reason is kept."""
        self._exit_code = max(code, self._exit_code or 0)
        self._exit_reason = self._exit_reason or reason

    def override_exit(self, code: int, reason: str) -> None:
        self._exit_code = max(self._exit_code or 0, code)
        self._exit_reason = reason

    def default_exit(self, code: int) -> int:
        if self._exit_code is None:
            self._exit_code = code
        return self._exit_code

    def finish_upstream(self) -> None:
        self._upstream_finished = True

    def add_bucket_dirs(self, dirs: Iterable[str]) -> None:
        self._bucket_dirs.update(dirs)

    def load(self, step: Tracked, deadlines: dict[str, float], exit_code: int | None,
             exit_reason: str, upstream_finished: bool, bucket_dirs: set[str]) -> None:
        m = self.model
        m.serial, m.state, m.history, m.stuck_reported = (step.serial, step.state, step.history,
                                                          step.stuck_reported)
        self._deadlines.clear()
        self._deadlines.update(deadlines)
        self._exit_code, self._exit_reason = exit_code, exit_reason
        self._upstream_finished, self._bucket_dirs = upstream_finished, bucket_dirs
