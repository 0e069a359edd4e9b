"""SIGTERM and SIGINT from the start of a run to the process's end (docs/reliability.md).

Before the loop runs nothing has been taken from the broker, so a signal ends the process
with 0 (``quiet_exit``); then the loop handles them (a clean shutdown, exit 0); once the
exit code is decided they are ignored (``hold_exit_code``) until the process is gone, so a
late one cannot replace the code with the default action's status 143. Ignored rather
than handled: the interpreter's teardown resets a Python handler to the default action
before the process ends, but leaves an ignored signal ignored.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, NoReturn

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def handle(handler: Callable[[int, Any], Any] | signal.Handlers) -> None:
    """Install one handler for both signals (main thread only, as `signal.signal`)."""
    for sig in SIGNALS:
        signal.signal(sig, handler)


def quiet_exit(_signum: int, _frame: Any) -> NoReturn:
    hold_exit_code()
    raise SystemExit(0)


def hold_exit_code() -> None:
    """The exit code is decided: no signal changes it from now on."""
    handle(signal.SIG_IGN)
