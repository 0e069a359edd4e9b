"""Broker.close() in every connection state pika has: open, opening, closing, closed.

The exit path calls it after SIGTERM, a fatal error or a lost broker; it must never raise
(the original check used an `is_opening` that pika's connections do not have, so a
SIGTERM while the broker was unreachable ended in a traceback), and it never calls close()
on a connection still opening: pika asserts when that happens during the AMQP handshake
(issue 13; tests/integration/test_signals_at_the_edges.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sidecar.shell.io.amqp import Broker


@dataclass
class FakeConnection:
    is_open: bool = False
    is_closed: bool = False
    is_closing: bool = False
    close_calls: int = 0

    def close(self) -> None:
        self.close_calls += 1


def broker() -> Broker:
    return Broker("amqp://guest:guest@127.0.0.1:5672/%2F", ioloop=None,
                  post=lambda _event: None, input_queue="q")


@pytest.mark.parametrize(("state", "closes"), [
    ({"is_open": True}, True),
    ({}, False),  # opening: neither open nor closed; left to the exit
    ({"is_closing": True}, False),
    ({"is_closed": True}, False),
])
def test_close_in_every_connection_state(state: dict, closes: bool) -> None:
    b = broker()
    b.conn = FakeConnection(**state)  # type: ignore[assignment]
    finished = []
    b.close(on_closed=lambda: finished.append(True))
    assert b.conn.close_calls == (1 if closes else 0)  # type: ignore[union-attr]
    assert finished == ([] if closes else [True])  # else the close callback finishes it


def test_close_before_any_connection() -> None:
    b = broker()
    finished = []
    b.close(on_closed=lambda: finished.append(True))
    assert finished == [True]


@dataclass
class FakeChannel:
    is_open: bool
    close_calls: int = 0

    def close(self) -> None:
        if not self.is_open:  # as pika's Channel._raise_if_not_open
            raise AssertionError("ChannelWrongStateError: Channel is closing.")
        self.close_calls += 1


@pytest.mark.parametrize("is_open", [True, False])
def test_a_declare_ok_on_a_closing_channel_finishes_without_closing_it(is_open: bool) -> None:
    """A SIGTERM while the queues are declared closes the connection, and with it the
    channels; a declare-ok that arrives then must not close its channel again."""
    b = broker()
    done = []
    b.queues.waiting["q"] = [lambda: done.append(True)]
    ch = FakeChannel(is_open)
    b.queues._declared(ch, "q")  # type: ignore[arg-type]
    assert ch.close_calls == (1 if is_open else 0)
    assert done == [True] and "q" in b.queues.declared
