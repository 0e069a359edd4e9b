"""The transformation link: its connections on tts.sock and fts.sock, the inputs waiting
for one, the kill, and whether it went away without one (§16.5)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence, Set
from typing import Final


class Link:
    def __init__(self) -> None:
        self._ready: deque[int] = deque()  # downloaded inputs waiting for a tts connection
        # The same deque, read-only for others; an attribute, not a property: the core
        # checks it after every event. Never rebound (Final), so load() refills it in place.
        self.ready: Final[Sequence[int]] = self._ready
        self._tts: list[int] = []
        self._fts: set[int] = set()
        self._killed: set[int] = set()  # tts connections that got the kill
        self._kill_received = False
        self._orphaned = False  # every connection closed without a kill (§16.5)
        self._rr = 0  # round robin over the tts connections

    # --- read-only views ---

    @property
    def tts(self) -> Sequence[int]:
        return self._tts

    @property
    def fts(self) -> Set[int]:
        return self._fts

    @property
    def killed(self) -> Set[int]:
        return self._killed

    @property
    def kill_received(self) -> bool:
        return self._kill_received

    @property
    def orphaned(self) -> bool:
        return self._orphaned

    @property
    def rr(self) -> int:
        return self._rr

    @property
    def connected(self) -> bool:
        return bool(self._tts or self._fts)

    @property
    def seen(self) -> bool:
        """Has the transformation ever connected? (Once it has, a disconnect is a crash,
        handled by the grace period; read off the state, so snapshots stay as they are.)"""
        return bool(self._tts or self._fts or self._orphaned or self._kill_received)

    @property
    def can_dispatch(self) -> bool:
        return bool(self._ready and self._tts)

    # --- changes ---

    def connect(self, channel: str, conn: int) -> bool:
        """A new connection; True when it is the transformation back after a crash."""
        if channel == "fts":
            self._fts.add(conn)
            return False
        self._tts.append(conn)
        back, self._orphaned = self._orphaned, False
        return back

    def disconnect(self, channel: str, conn: int) -> bool:
        """A connection closed; True when none is left and no kill came: a crash."""
        if channel == "tts" and conn in self._tts:
            self._tts.remove(conn)
        self._fts.discard(conn)
        self._killed.discard(conn)
        return not (self._tts or self._fts or self._kill_received)

    def orphan(self) -> None:
        self._orphaned = True

    def queue(self, serial: int) -> None:
        self._ready.append(serial)

    def next_ready(self) -> int:
        return self._ready.popleft()

    def next_conn(self) -> int:
        conn = self._tts[self._rr % len(self._tts)]
        self._rr += 1
        return conn

    def receive_kill(self) -> bool:
        """The transformation's kill; False for a second one."""
        if self._kill_received:
            return False
        self._kill_received = True
        return True

    def to_kill(self) -> list[int]:
        """The tts connections that have not had the kill yet (they have it now)."""
        new = [conn for conn in self._tts if conn not in self._killed]
        self._killed.update(new)
        return new

    def load(self, ready: deque[int], tts: list[int], fts: set[int], killed: set[int],
             kill_received: bool, orphaned: bool, rr: int) -> None:
        self._ready.clear()
        self._ready.extend(ready)
        self._tts, self._fts, self._killed = tts, fts, killed
        self._kill_received, self._orphaned, self._rr = kill_received, orphaned, rr
