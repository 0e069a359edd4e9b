"""The acks the core gives while one confirm frame is handled, sent as one multiple ack
where that is exactly the same.

A confirm frame of the broker often settles the lineage publishes of several fragments
at once, and the core then acks their inputs one after the other: one frame each. Held
until the confirm frame is handled, the acks that cover the oldest outstanding deliveries
of the channel without a gap go out as one ``basic_ack(multiple=True)``, the rest one by
one, as before. A multiple ack settles every outstanding delivery up to its tag, so it must
never cover one the core has not acked: the deliveries of the consuming channel are kept
here in the order they came (their tags grow along a channel) until acked or nacked, and
only a prefix of them that the core acked entirely is sent as one.
"""

from __future__ import annotations


class Acks:
    """The consuming channel's outstanding deliveries and the acks held for a moment."""

    def __init__(self) -> None:
        self.outstanding: dict[int, None] = {}  # delivery tag -> None, in delivery order
        self.held: list[int] | None = None  # acks held while holding, else None

    def clear(self) -> None:
        """A new channel: the tags start again (the old ones are void, the core knows)."""
        self.outstanding.clear()
        if self.held is not None:
            self.held = []

    def delivered(self, tag: int) -> None:
        self.outstanding[tag] = None

    def settled(self, tag: int) -> None:
        """``tag`` was acked or nacked on the channel."""
        self.outstanding.pop(tag, None)

    def hold(self) -> bool:
        """From now on ``take`` holds the acks, until ``stop``; False if it did already."""
        if self.held is not None:
            return False
        self.held = []
        return True

    def take(self, tag: int) -> bool:
        """Hold the ack of ``tag`` if holding (True), else leave it to the caller."""
        held = self.held
        if held is None:
            return False
        held.append(tag)
        return True

    def stop(self) -> list[tuple[int, bool]]:
        """Stop holding; the acks to send for what was held."""
        sends = self.release()
        self.held = None
        return sends

    def release(self) -> list[tuple[int, bool]]:
        """The acks to send for those held so far, as (tag, multiple), each settled."""
        held = self.held
        if not held:
            return []
        self.held = []
        outstanding, sends = self.outstanding, []
        if len(held) > 1:
            acked = set(held)
            prefix = []
            for tag in outstanding:  # ascending: the oldest outstanding delivery first
                if tag not in acked:
                    break
                prefix.append(tag)
            if len(prefix) > 1:
                sends.append((prefix[-1], True))
                for tag in prefix:
                    del outstanding[tag]
                acked.difference_update(prefix)
                held = [tag for tag in held if tag in acked]
        for tag in held:
            outstanding.pop(tag, None)
            sends.append((tag, False))
        return sends
