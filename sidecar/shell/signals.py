"""SIGTERM and SIGINT from the start of a run to the process's end (docs/reliability.md).

Before the loop runs nothing has been taken from the broker and nothing is open that needs
closing, so a signal ends the process with 0 (``quiet_exit``); then the loop handles them
(a clean shutdown, exit 0) through a ``Delivery``; once the exit code is decided they are
ignored (``hold_exit_code``) until the process is gone, so a late one cannot replace the
code with the default action's status 143. Ignored rather than handled: the interpreter's
teardown resets a Python handler to the default action before the process ends, but
leaves an ignored signal ignored.

A Python signal handler runs on the main thread between two bytecodes of whatever that
thread was doing, so it must neither raise into it nor take a lock it may hold: an
exception raised there is lost if the interrupted code was a ``__del__`` or a weakref
callback, and a handler that woke the loop took pika's non-reentrant waking lock, which
the loop thread holds while it wakes itself (a SIGTERM that arrived then deadlocked the
loop; seen once in CI).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from typing import Any, NoReturn

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def handle(handler: Callable[[int, Any], Any] | signal.Handlers) -> None:
    """Install one handler for both signals (main thread only, as `signal.signal`)."""
    for sig in SIGNALS:
        signal.signal(sig, handler)


def quiet_exit(_signum: int, _frame: Any) -> NoReturn:
    # os._exit, not SystemExit: an exception raised in a handler can be swallowed by the
    # code it interrupts (a __del__), and before the loop there is nothing to tear down
    # (log records are flushed as they are written).
    os._exit(0)


def hold_exit_code() -> None:
    """The exit code is decided: no signal changes it from now on."""
    handle(signal.SIG_IGN)


def _noted(_signum: int, _frame: Any) -> None:
    """The Python half of a delivered signal: nothing; its C half wrote the byte."""


class Delivery:
    """SIGTERM and SIGINT as bytes on a socket the loop watches like any other.

    The interpreter's C-level handler writes each signal's number to the wakeup fd
    (``signal.set_wakeup_fd``), which needs no lock and cannot be lost in the code it
    interrupts; the loop reads the names with ``received``. Main thread only.
    """

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        for end in (self._read, self._write):
            end.setblocking(False)
        self.installed = False  # between install() and close()

    def install(self) -> None:
        """From now on a signal is a byte to read (and no longer ends the process)."""
        signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self.installed = True
        handle(_noted)

    def fileno(self) -> int:
        """The end to watch for reading."""
        return self._read.fileno()

    def received(self) -> list[str]:
        """The names of the signals delivered since the last call, in order."""
        names: list[str] = []
        while True:
            try:
                data = self._read.recv(256)
            except (BlockingIOError, InterruptedError):
                return names
            if not data:
                return names
            names += [_name(number) for number in data]

    def close(self) -> None:
        """Stop writing to the socket (before it is closed: the fd could be reused)."""
        if self.installed:
            signal.set_wakeup_fd(-1)
            self.installed = False
        self._read.close()
        self._write.close()


def _name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
