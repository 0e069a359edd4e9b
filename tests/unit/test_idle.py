"""An idle sidecar wakes up for nothing: the snapshot for the HTTP endpoint is published
after events (and by a slow heartbeat), the journal's flush timer is armed by a write, and
the HTTP server's thread sleeps until a connection comes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_config import manager_env

from sidecar.core import events as ev
from sidecar.shell import config
from sidecar.shell.http import Board, HttpServer
from sidecar.shell.journal import FLUSH_INTERVAL
from sidecar.shell.loop import Runner
from sidecar.shell.metrics import Metrics
from sidecar.shell.operate import HEARTBEAT, PUBLISH_DELAY, Operations, build
from sidecar.shell.recovery import Journal
from states import BoardState


class Timers:
    """Stands in for the IOLoop's timers: what is armed, fired by hand."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        entry = (delay, callback)
        self.armed.append(entry)
        return entry

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        self.call_later(0, callback)

    def remove_timeout(self, entry: object) -> None:
        self.armed.remove(entry)  # type: ignore[arg-type]

    def delays(self) -> list[float]:
        return sorted(d for d, _ in self.armed)

    def fire(self, delay: float) -> None:
        [entry] = [e for e in self.armed if e[0] == delay and not _turn_end(e)]
        self.armed.remove(entry)
        entry[1]()

    def end_turn(self) -> None:
        """What pika does after a turn's handlers: run the Runner's end of turn (armed once
        by the turn's first event)."""
        [entry] = [e for e in self.armed if _turn_end(e)]
        self.armed.remove(entry)
        entry[1]()


def _turn_end(entry: tuple[float, Callable[[], None]]) -> bool:
    return getattr(entry[1], "__name__", "") == "end_turn"


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def runner(tmp_path: Path, **env: str) -> tuple[Runner, Timers, Clock]:
    clock = Clock()
    r = build(config.load({**manager_env(tmp_path), "SIDECAR_HTTP_PORT": "0", **env}),
              clock)
    r.ioloop.close()
    r.ioloop = Timers()  # type: ignore[assignment]
    return r, r.ioloop, clock  # type: ignore[return-value]


def test_a_snapshot_is_published_after_events_not_periodically(tmp_path: Path) -> None:
    r, timers, clock = runner(tmp_path, SIDECAR_JOURNAL="off",
                              SIDECAR_VOLUME_CHECK_INTERVAL="30")
    ops = next(o for o in r.observers if isinstance(o, Operations))
    assert ops.state == BoardState.STOPPED
    r.feed(ev.Tick())
    assert timers.delays() == [0]  # the end of this loop turn
    timers.end_turn()  # before start: nothing published, nothing armed
    assert (ops.state, timers.delays()) == (BoardState.STOPPED, [])
    ops.start(r)
    volume_check = r.s.volume_check_interval
    assert ops.board.snapshot.taken == 100.0
    assert (ops.state, timers.delays()) == (BoardState.CURRENT, [0, HEARTBEAT])
    timers.fire(0)  # the volume check: an event
    assert ops.state == BoardState.CURRENT  # until the end of the turn
    timers.end_turn()
    assert timers.delays() == [PUBLISH_DELAY, volume_check]  # the heartbeat is replaced
    assert ops.state == BoardState.STALE
    clock.now = 100.2
    r.feed(ev.Connected(1, "tts"))  # coalesced into the publish already armed
    r.feed(ev.Tick())  # the same turn: one end
    timers.end_turn()
    assert timers.delays() == [PUBLISH_DELAY, volume_check]
    clock.now = 100.5
    timers.fire(PUBLISH_DELAY)
    snap = ops.board.snapshot
    assert (snap.taken, snap.transformation, snap.volume_free is not None) == (100.5, True, True)
    assert timers.delays() == [HEARTBEAT, volume_check]  # nothing happens: the heartbeat
    assert ops.state == BoardState.CURRENT
    clock.now = 105.5
    timers.fire(HEARTBEAT)
    assert ops.board.snapshot.taken == 105.5
    assert timers.delays() == [HEARTBEAT, volume_check]
    ops.stop()
    ops.stop()  # a second stop is no error
    assert ops.state == BoardState.ENDED
    r.feed(ev.Tick())  # after the stop: nothing armed, a due timer publishes nothing
    timers.end_turn()
    clock.now = 110.0
    timers.fire(HEARTBEAT)
    timers.fire(volume_check)
    assert (ops.board.snapshot.taken, timers.delays()) == (105.5, [])


def test_the_journal_flush_is_armed_by_the_first_write_after_a_flush(tmp_path: Path) -> None:
    r, timers, _ = runner(tmp_path)
    rec = next(o for o in r.observers if isinstance(o, Journal))
    rec.start(r)
    assert timers.delays() == [FLUSH_INTERVAL]  # the header and the checkpoint
    timers.fire(FLUSH_INTERVAL)
    assert len(Path(rec.path).read_text().splitlines()) == 2
    assert timers.delays() == []  # nothing recorded: nothing to wake up for
    r.feed(ev.UpstreamFinished())
    r.feed(ev.Tick())
    timers.end_turn()
    assert timers.delays() == [FLUSH_INTERVAL]  # one timer for both lines
    assert len(Path(rec.path).read_text().splitlines()) == 2
    timers.fire(FLUSH_INTERVAL)
    assert len(Path(rec.path).read_text().splitlines()) == 4
    assert timers.delays() == []
    rec.close()


def _switches(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_the_http_thread_sleeps_until_a_request_and_stops_at_once() -> None:
    server = HttpServer("127.0.0.1", 0, Board(Clock(), lambda: True), Metrics().registry)
    server.start()
    try:
        time.sleep(0.1)  # let it reach select()
        assert server.thread.native_id is not None
        before = _switches(server.thread.native_id)
        time.sleep(1.2)  # serve_forever would have woken twice to poll
        assert _switches(server.thread.native_id) == before
    finally:
        start = time.monotonic()
        server.stop()
    assert not server.thread.is_alive()
    assert time.monotonic() - start < 1.0
