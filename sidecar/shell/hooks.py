"""What the shell's observers and adapter hooks may implement, declared once.

Modelled on dramatiq's middleware: a component subclasses the interfaces it takes part in
and overrides only the methods it cares about; every method has a no-op default. The
builder (``sidecar/shell/operate.py`` ``build``) hands them to the ``Runner`` at
construction (``observers=``, ``hooks=``); the Runner passes the hooks on to its adapters
and calls the observers. Nobody assigns callbacks onto another object afterwards.

These are ``typing.Protocol`` classes with default bodies: subclassing one explicitly
inherits its no-ops, and any object with the right methods type-checks as one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from ..core import Transition
from ..core import effects as fx
from ..core.events import Event


class Loop(Protocol):
    """The Runner as an observer sees it (loop thread only): timers, events, totals."""

    totals: Counter[str]  # "<lifecycle> <outcome>" -> fragments (read only)

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        """Run ``callback`` on the loop thread in ``delay`` seconds; returns a handle."""
        ...

    def remove_timeout(self, handle: object) -> None:
        """Cancel a callback ``call_later`` returned the handle of."""
        ...

    def feed(self, event: Event) -> None:
        """Hand an event to the core (loop thread only)."""
        ...


class Observer(Protocol):
    """A Runner observer. ``__call__`` runs after every event, on the loop thread: it is
    the hot path, keep it cheap. ``turn_ended`` runs once per loop turn that handled
    events, after them all: work that needs only the state between turns belongs there
    (a pika turn delivers about eight events when the sidecar is busy). The other methods
    frame the run. The Runner calls ``__call__`` and ``turn_ended`` only on observers that
    override them."""

    def __call__(self, event: Event, now: float, effects: list[fx.Effect],
                 transitions: list[Transition]) -> None:
        """The event handled at clock reading ``now``, the effects and transitions it made
        (the list is the core's: read it, do not keep it)."""
        return None

    def turn_ended(self) -> None:
        """The events of one loop turn are handled and their effects performed; the loop
        goes back to waiting for I/O or timers next."""
        return None

    def start(self, loop: Loop) -> None:
        """Before the loop runs, in the order the observers were declared. May raise
        OSError to end the start (e.g. a taken HTTP port)."""
        return None

    def exiting(self) -> None:
        """The exit code is decided; the loop still runs until the broker is closed."""
        return None

    def stop(self) -> None:
        """After the loop ended (also when it ended with an exception)."""
        return None


class StorageHooks(Protocol):
    """What the storage adapter reports. Called from worker threads: thread-safe."""

    def request(self, operation: str, result: str, seconds: float) -> None:
        """One HTTP request to S3: ``result`` is the status code, or "error"."""
        return None

    def transfer(self, direction: str, size: int, seconds: float) -> None:
        """One attempt to move a file ("download" or "upload"); size 0 if it failed."""
        return None

    def retry(self, operation: str) -> None:
        """A transient failure of "download", "upload", "bucket" (storage) or "manager"
        (the upstream checker's thread) will be retried."""
        return None


class ManagerHooks(Protocol):
    """What the upstream checker reports (its own thread): the same retry counter."""

    def retry(self, operation: str) -> None:
        return None


class BrokerHooks(Protocol):
    """What the AMQP adapter reports (loop thread)."""

    def on_confirm(self, result: str, seconds: float) -> None:
        """A publish settled: "ack", "nack" or "returned", ``seconds`` after it was sent."""
        return None


class SocketHooks(Protocol):
    """What the socket server reports (loop thread)."""

    def on_refused(self, channel: str) -> None:
        """A connection to "tts" or "fts" refused (the peer runs as another uid)."""
        return None


class AdapterHooks(StorageHooks, ManagerHooks, BrokerHooks, SocketHooks, Protocol):
    """Every adapter's hooks in one object (what ``Runner(hooks=...)`` takes)."""


class NoHooks(AdapterHooks):
    """The defaults: report nothing."""


NO_HOOKS = NoHooks()
