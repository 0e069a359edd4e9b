"""Operations wiring: metrics, the HTTP endpoint, the volume check, OpenLineage.

The Runner creates one ``Operations`` and calls ``start()`` before its loop runs and
``stop()`` after it ended. Everything here that reads the core runs on the loop thread
(observers and ``ioloop.call_later`` callbacks); the HTTP threads only read the Board.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .core import Core, Input
from .events import VolumeSpace
from .http import Board, Fragment, HttpServer, Snapshot
from .metrics import Metrics, instrument

log = logging.getLogger("sidecar.operate")
PUBLISH_INTERVAL = 0.5  # seconds between snapshots for the HTTP endpoint


class Operations:
    def __init__(self, runner: Any):
        self.runner = runner
        s = runner.s
        self.metrics = Metrics()
        self.storage = instrument(runner, self.metrics)
        self.board = Board(runner.clock, lambda: self.storage.reachable)
        self.server: HttpServer | None = None
        self.lineage: Any = None
        if s.openlineage != "off":
            from .openlineage import attach

            self.lineage = attach(runner, self.metrics)
        self._running = False

    def start(self) -> None:
        """Bind the HTTP port (OSError if it is taken), then schedule the periodic work."""
        s = self.runner.s
        if s.http_port:
            try:
                self.server = HttpServer(s.http_host, s.http_port, self.board,
                                         self.metrics.registry)
            except OSError as err:
                raise OSError(err.errno, f"HTTP endpoint {s.http_host}:{s.http_port} "
                              f"(SIDECAR_HTTP_PORT): {err.strerror}") from None
            self.server.start()
        self._running = True
        self.publish()
        self.runner.ioloop.call_later(0, self._check_volume)
        self.runner.ioloop.call_later(PUBLISH_INTERVAL, self._publish_periodically)

    def stop(self) -> None:
        self._running = False
        if self.server is not None:
            self.server.stop()
        if self.lineage is not None:
            self.lineage.close()

    # --- on the loop thread ------------------------------------------------------------

    def publish(self) -> None:
        self.board.publish(snapshot(self.runner.core, self.runner.clock(),
                                    dict(self.runner.totals)))

    def _publish_periodically(self) -> None:
        if self._running:
            self.publish()
            self.runner.ioloop.call_later(PUBLISH_INTERVAL, self._publish_periodically)

    def _check_volume(self) -> None:
        if not self._running:
            return
        try:
            st = os.statvfs(self.runner.s.data_volume_path)
        except OSError as err:
            log.warning("cannot measure the volume: %s", err)
        else:
            self.runner.feed(VolumeSpace(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
        self.runner.ioloop.call_later(self.runner.s.volume_check_interval, self._check_volume)


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
        transformation=bool(core.tts or core.fts), consuming=core.consuming,
        paused=core.paused, volume_free=core.volume_free, volume_low=core.volume_low,
        fragments=fragments, counts=counts, totals=totals)
