"""Queue declarations on the broker connection: passive first, then with the Iterum flags.

A passive declare uses a queue as it is, so one an operator made durable or quorum keeps
its kind (§16.16); only a missing queue (NOT_FOUND) is declared, with the Iterum flags
(§5.2). A failed declare closes its channel, so each declare gets a channel of its own and
the consuming and publishing channels survive it. A queue the broker refuses outright
(e.g. PRECONDITION_FAILED) ends the run: reconnecting would not change that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

from pika.adapters.select_connection import SelectConnection
from pika.channel import Channel
from pika.exceptions import ChannelClosedByBroker

NOT_FOUND = 404


class QueueFlags(TypedDict):
    """queue_declare's flags, typed so that ``**ITERUM_FLAGS`` checks against pika's."""

    durable: bool
    auto_delete: bool
    exclusive: bool


ITERUM_FLAGS: QueueFlags = {"durable": False, "auto_delete": False, "exclusive": False}


class Queues:
    """The queues declared on the current connection, and the callbacks waiting for one.

    ``current`` (given with each request) says whether the connection it was made on is
    still the broker's current one: callbacks of a lost connection do nothing.
    """

    def __init__(self, refused: Callable[[str, BaseException], None]):
        self.declared: set[str] = set()
        self.waiting: dict[str, list[Callable[[], None]]] = {}
        self.refused = refused  # the broker refuses a queue: the run ends

    def clear(self) -> None:
        """The connection is lost, and every declaration with it."""
        self.declared.clear()
        self.waiting.clear()

    def ensure(self, conn: SelectConnection | None, current: Callable[[], bool],
               queue: str, then: Callable[[], None]) -> None:
        """``then()`` once ``queue`` exists (at once if it was declared already)."""
        if queue in self.declared:
            then()
            return
        if queue in self.waiting:
            self.waiting[queue].append(then)
            return
        if conn is None or not conn.is_open:
            return  # lost: the core sends again after the next BrokerReady
        self.waiting[queue] = [then]
        conn.channel(on_open_callback=lambda ch: self._passive(conn, current, ch, queue))

    def _passive(self, conn: SelectConnection, current: Callable[[], bool], ch: Channel,
                 queue: str) -> None:
        if not current():
            return

        def on_closed(_ch: Channel, reason: BaseException) -> None:
            if not current() or queue not in self.waiting:
                return
            if getattr(reason, "reply_code", None) == NOT_FOUND:
                conn.channel(on_open_callback=lambda c: self._declare(current, c, queue))
            elif isinstance(reason, ChannelClosedByBroker):  # e.g. PRECONDITION_FAILED
                self._refused(queue, reason)

        ch.add_on_close_callback(on_closed)
        ch.queue_declare(queue, passive=True, callback=lambda _f: self._declared(ch, queue))

    def _declare(self, current: Callable[[], bool], ch: Channel, queue: str) -> None:
        if not current():
            return

        def on_closed(_ch: Channel, reason: BaseException) -> None:
            if (current() and queue in self.waiting
                    and isinstance(reason, ChannelClosedByBroker)):
                self._refused(queue, reason)

        ch.add_on_close_callback(on_closed)
        ch.queue_declare(queue, **ITERUM_FLAGS, callback=lambda _f: self._declared(ch, queue))

    def _refused(self, queue: str, reason: BaseException) -> None:
        self.waiting.pop(queue, None)
        self.refused(queue, reason)

    def _declared(self, ch: Channel, queue: str) -> None:
        self.declared.add(queue)
        callbacks = self.waiting.pop(queue, [])
        if ch.is_open:  # not when the connection is closing (SIGTERM during the declares):
            ch.close()  # pika raises on closing a closing channel, inside its I/O loop
        for then in callbacks:
            then()
