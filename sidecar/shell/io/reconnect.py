"""The broker's reconnect policy: jittered exponential backoff within a time budget.

An outage (a lost connection, or the first connection at the start) may last
SIDECAR_BROKER_RETRY_SECONDS; the attempts inside it wait 0.25 s, 0.5 s, 1 s ... up to 10 s,
each jittered down to half so that many sidecars of one pipeline do not reconnect in step
(docs/reliability.md). ``Broker`` (sidecar/shell/io/amqp.py) owns one ``Backoff`` and reads
the clock; this module does no I/O, so the policy is readable (and testable) on its own.
"""

from __future__ import annotations

import random

RETRY_BASE, RETRY_MAX = 0.25, 10.0  # seconds: the backoff between connection attempts


class Backoff:
    """One outage's attempts and deadline, and what started it (for the final message)."""

    def __init__(self, budget: float):
        self.budget = budget  # seconds: SIDECAR_BROKER_RETRY_SECONDS
        self.deadline = 0.0  # monotonic time at which the outage is given up
        self.attempt = 0  # connection attempts in this outage so far
        self.cause = ""  # what started the outage

    def start(self, now: float) -> None:
        """The budget starts now (the first connection of the run)."""
        self.deadline = now + self.budget

    def begin_outage(self, now: float, cause: str) -> None:
        """A working connection was lost: a fresh budget and attempt count."""
        self.start(now)
        self.attempt = 0
        self.cause = cause

    def attempting(self) -> None:
        """A connection attempt starts."""
        self.attempt += 1

    def connected(self) -> None:
        """The broker is ready again: the next outage counts its attempts from 1."""
        self.attempt = 0

    def spent(self, now: float) -> bool:
        return now >= self.deadline

    def left(self, now: float) -> float:
        return self.deadline - now

    def delay(self, now: float) -> float:
        """Seconds to wait before the next attempt: exponential in the attempts made,
        jittered to [50 %, 100 %], never past the deadline."""
        delay = min(RETRY_MAX, RETRY_BASE * 2 ** min(self.attempt, 8))
        return min(delay * random.uniform(0.5, 1.0), self.left(now))

    def gave_up(self, problem: str) -> str:
        """The message that ends the run: the outage's first cause, then the last problem."""
        cause = f"{self.cause}; then " if self.cause and self.cause != problem else ""
        return (f"{cause}{problem} (gave up after "
                f"SIDECAR_BROKER_RETRY_SECONDS={self.budget:g}s)")


def describe(err: BaseException) -> str:
    """One line for a pika error, down to its root cause (pika nests them, often with an
    empty message: AMQPConnectionError(AMQPConnectionWorkflowFailed(...)))."""
    seen = 0
    while seen < 5:
        seen += 1
        inner = getattr(err, "exceptions", None)
        if inner:  # AMQPConnectionWorkflowFailed: the attempts' errors
            err = inner[-1]
            continue
        nested = getattr(err, "exception", None)  # AMQPConnectorSocketConnectError & co
        if isinstance(nested, BaseException):
            err = nested
            continue
        if len(err.args) == 1 and isinstance(err.args[0], BaseException):
            err = err.args[0]
            continue
        break
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else repr(err)
