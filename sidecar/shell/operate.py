"""Operations wiring: ``build`` assembles a Runner with its observers (metrics,
OpenLineage, the HTTP endpoint and volume check, the journal) and the adapters' hooks.

``Operations`` is one of the observers: the Runner calls its ``start()`` before its loop
runs and ``stop()`` after it ended. Everything here that reads the core runs on the loop
thread (observers and ``call_later`` callbacks); the HTTP threads only read the Board.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from states import BOARD, BoardEvent, BoardState

from ..core import Core, Input
from ..core.events import VolumeSpace
from .config import ANY_PORT, Settings, core_config
from .hooks import Loop, Observer
from .http import Board, Fragment, HttpServer, Snapshot
from .loop import Runner
from .metrics import AdapterMetrics, Metrics, MetricsObserver
from .recovery import Journal

log = logging.getLogger("sidecar.operate")
# A snapshot for the HTTP endpoint is published this long after the first event since the
# last one (events in between are coalesced), so it is never older than this while the
# sidecar works; an idle sidecar publishes one every HEARTBEAT seconds, which keeps
# /healthz alive (HEARTBEAT_LIMIT) and wakes the loop for nothing else.
PUBLISH_DELAY = 0.5
HEARTBEAT = 5.0


def build(settings: Settings, clock: Callable[[], float] = time.monotonic) -> Runner:
    """Assemble a Runner: the core, then its observers in the order they start (metrics,
    OpenLineage, operations, the journal) and the adapters' hooks (the metrics)."""
    core = Core(core_config(settings))
    metrics = Metrics()
    metrics.describe_step(settings.iterum_name)
    hooks = AdapterMetrics(metrics)
    observers: list[Observer] = [MetricsObserver(metrics, core)]
    if settings.openlineage != "off":
        from .openlineage import observer as lineage  # its dependencies only when used

        observers.append(lineage(settings, core, metrics))
    observers.append(Operations(settings, core, clock, metrics, hooks))
    if settings.journal_enabled:
        observers.append(Journal(settings.journal_path, core,
                                 max_bytes=settings.journal_max_bytes,
                                 keep=settings.journal_segments))
    return Runner(settings, clock, core=core, observers=observers, hooks=hooks)


class Operations(Observer):
    """The HTTP endpoint (its Board is published after events and on a heartbeat) and the
    volume check; an observer of loop turns, because any event may change what the
    endpoint shows."""

    def __init__(self, settings: Settings, core: Core, clock: Callable[[], float],
                 metrics: Metrics, storage: AdapterMetrics):
        self.s = settings
        self.core = core
        self.clock = clock
        self.metrics = metrics
        self.storage = storage  # its last S3 answer is the storage readiness
        self.board = Board(clock, lambda: storage.reachable)
        self.server: HttpServer | None = None
        self.loop: Loop | None = None  # given by start()
        self.state = BOARD.initial  # states.BOARD: whether the board shows the last event
        self._timer: Any = None  # the next publish (soon after an event, or the heartbeat)

    def start(self, loop: Loop) -> None:
        """Bind the HTTP port (OSError if it is taken), then schedule the periodic work."""
        s = self.s
        self.loop = loop
        if s.http_port:
            auto = s.http_port == ANY_PORT
            try:
                self.server = HttpServer(s.http_host, 0 if auto else s.http_port, self.board,
                                         self.metrics.registry)
            except OSError as err:
                raise OSError(err.errno, bind_failure(s.http_host, s.http_port, err)) from None
            self.server.start(auto)
        BOARD.fire(self, BoardEvent.START)
        self._publish_due()
        loop.call_later(0, self._check_volume)

    def stop(self) -> None:
        if self.state != BoardState.ENDED:
            BOARD.fire(self, BoardEvent.STOP)
        if self.server is not None:
            self.server.stop()

    def turn_ended(self) -> None:
        """Any event may change what the snapshot shows: publish soon (once per loop turn
        that handled events, not per event)."""
        if self.state == BoardState.CURRENT:
            BOARD.fire(self, BoardEvent.EVENT)
            self._arm(PUBLISH_DELAY)

    # --- on the loop thread ------------------------------------------------------------

    def publish(self) -> None:
        assert self.loop is not None
        self.board.publish(snapshot(self.core, self.clock(), dict(self.loop.totals)))

    def _publish_due(self) -> None:
        self._timer = None
        if self.state in (BoardState.CURRENT, BoardState.STALE):
            self.publish()
            BOARD.fire(self, BoardEvent.PUBLISHED)
            self._arm(HEARTBEAT)

    def _arm(self, delay: float) -> None:
        assert self.loop is not None
        if self._timer is not None:
            self.loop.remove_timeout(self._timer)
        self._timer = self.loop.call_later(delay, self._publish_due)

    def _check_volume(self) -> None:
        if self.state not in (BoardState.CURRENT, BoardState.STALE) or self.loop is None:
            return
        try:
            st = os.statvfs(self.s.data_volume_path)
        except OSError as err:
            log.warning("cannot measure the volume: %s", err)
        else:
            self.loop.feed(VolumeSpace(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
        self.loop.call_later(self.s.volume_check_interval, self._check_volume)


def bind_failure(host: str, port: int, err: OSError) -> str:
    """The one line a failed bind ends the start with: what happened, and what to do."""
    where = f"HTTP endpoint {host}:{'auto' if port == ANY_PORT else port} (SIDECAR_HTTP_PORT)"
    if err.errno in (errno.EADDRINUSE, errno.EACCES):
        return (f"{where}: {err.strerror}; set SIDECAR_HTTP_PORT to a free port, to `auto` "
                "for any free one (the `http:` log line names it), or to 0 to switch the "
                "endpoint off")
    return f"{where}: {err.strerror} (SIDECAR_HTTP_HOST must be an address of this host)"


def snapshot(core: Core, now: float, totals: dict[str, int]) -> Snapshot:
    """An immutable copy of what the endpoint shows (built on the loop thread)."""
    stuck = {id(m) for m in core.stuck()}
    fragments = tuple(
        Fragment("input" if isinstance(m, Input) else "output", m.fragment_id, m.state,
                 m.history[-1][1], m.history[0][1], id(m) in stuck)
        for table in (core.inputs, core.outputs) for m in table.values())
    counts = {name: {state: n for state, n in c.items() if n} for name, c in core.states.items()}
    return Snapshot(
        taken=now, step=core.step.state, broker=core.broker_up,
        transformation=bool(core.tts or core.fts), intake=core.intake.state,
        paused=core.paused, volume_free=core.volume_free, volume_low=core.volume_low,
        fragments=fragments, counts=counts, totals=totals)
