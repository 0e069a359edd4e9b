"""The publishes awaiting the broker's confirm, and their ids.

A publish is kept until its confirm (or its final refusal): after a lost connection every
one is sent again, with the same body and message id, so a copy the broker already had is
an identical duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import effects as fx
from .emitter import Emitter
from .models import PendingPublish


class Publisher:
    def __init__(self, fx: Emitter):
        self._fx = fx
        self._publishes: dict[int, PendingPublish] = {}
        self._publish_id = 0

    @property
    def publishes(self) -> Mapping[int, PendingPublish]:
        return self._publishes

    @property
    def publish_id(self) -> int:
        return self._publish_id

    def publish(self, pending: PendingPublish, broker_up: bool) -> None:
        """Register a publish; it is sent now, or when the broker is back (``resend``)."""
        self._publish_id += 1
        self._publishes[self._publish_id] = pending
        if broker_up:
            self._send(self._publish_id, pending)

    def _send(self, publish_id: int, pending: PendingPublish) -> None:
        self._fx.emit(fx.Publish(publish_id, pending.queue, pending.body, pending.message_id,
                                 pending.headers))

    def resend(self) -> None:
        """Reconnected: every unconfirmed publish again, in the order first sent."""
        for publish_id, pending in self._publishes.items():
            self._send(publish_id, pending)

    def take(self, publish_id: int) -> PendingPublish | None:
        """The publish confirmed or refused, no longer awaited (None: not ours, or given up)."""
        return self._publishes.pop(publish_id, None)

    def drop_dead_letter(self, owner: int) -> None:
        """The input's delivery went back with its connection: its dead letter is moot."""
        for publish_id, pending in list(self._publishes.items()):
            if pending.kind == "dead_letter" and pending.owner == owner:
                del self._publishes[publish_id]

    def drop_output(self, owner: int) -> None:
        """The output is abandoned: no publish of it is awaited any more."""
        self._publishes = {pid: p for pid, p in self._publishes.items()
                           if p.kind == "dead_letter" or p.owner != owner}

    def clear(self) -> None:
        self._publishes.clear()

    def load(self, publishes: dict[int, PendingPublish], publish_id: int) -> None:
        self._publishes = publishes
        self._publish_id = publish_id
