"""The HTTP endpoint: /metrics, /healthz, /readyz, /debug/fragments.

A ``ThreadingHTTPServer`` on a daemon thread. It never calls into the core: the loop thread
publishes an immutable ``Snapshot`` into the ``Board`` (replacing one reference, which is
atomic), and the HTTP threads only read the latest one. Metrics come from the dedicated
prometheus registry, which is thread-safe.
"""

from __future__ import annotations

import json
import logging
import re
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("sidecar.http")
HEARTBEAT_LIMIT = 60.0  # /healthz fails when the loop has published nothing for this long
# Operators, the demo and the test harness find the port in this line (SIDECAR_HTTP_PORT=auto)
LISTENING = "http: /metrics /healthz /readyz /debug/fragments on port %d%s"
LISTENING_PORT = re.compile(re.escape(LISTENING.partition("%d")[0]) + r"(\d+)")
STOP_TIMEOUT = 5.0  # seconds stop() waits for the server thread (a daemon: never blocks exit)


@dataclass(frozen=True)
class Fragment:
    lifecycle: str  # "input" or "output"
    fragment_id: str
    state: str
    since: float  # clock reading when it entered this state
    received: float  # clock reading when it was received
    stuck: bool


@dataclass(frozen=True)
class Snapshot:
    """What the loop thread knew at ``taken`` (a clock reading)."""

    taken: float
    step: str = "starting"
    broker: bool = False
    transformation: bool = False
    intake: str = "starting"  # states.INTAKE: the consumer and its broker connection
    paused: tuple[str, ...] = ()
    volume_free: int | None = None
    volume_low: bool = False
    fragments: tuple[Fragment, ...] = ()
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)


class Board:
    """Written by the loop thread (``publish``), read by the HTTP threads (``snapshot``)."""

    def __init__(self, clock: Callable[[], float], storage_reachable: Callable[[], bool]):
        self.clock = clock
        self.storage_reachable = storage_reachable
        self.snapshot = Snapshot(taken=clock())

    def publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        s = self.snapshot
        checks = {
            "broker": s.broker,
            "storage": self.storage_reachable(),
            "transformation": s.transformation,
            "volume": not s.volume_low,
        }
        ready = all(checks.values())
        body = {"ready": ready, "checks": checks, "step": s.step, "intake": s.intake,
                "paused": list(s.paused), "stuck": sum(f.stuck for f in s.fragments)}
        return ready, body

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = self.clock() - self.snapshot.taken
        return age < HEARTBEAT_LIMIT, {"alive": age < HEARTBEAT_LIMIT, "heartbeat_age": age}

    def fragments(self) -> dict[str, Any]:
        s = self.snapshot
        now = self.clock()
        return {
            "step": s.step,
            "intake": s.intake,
            "snapshot_age": round(now - s.taken, 3),
            "paused": list(s.paused),
            "volume_free_bytes": s.volume_free,
            "counts": s.counts,
            "totals": s.totals,
            "in_flight": [
                {**{k: v for k, v in asdict(f).items() if k not in ("since", "received")},
                 "in_state_seconds": round(now - f.since, 3),
                 "age_seconds": round(now - f.received, 3)}
                for f in s.fragments],
        }


class HttpServer:
    """The server's thread sleeps in ``select`` until a connection or ``stop()`` wakes it
    (``serve_forever`` would wake twice a second to look for a shutdown request)."""

    def __init__(self, host: str, port: int, board: Board, registry: CollectorRegistry):
        handler = type("Handler", (_Handler,), {"board": board, "registry": registry})
        self.server = ThreadingHTTPServer((host, port), handler)  # binds now: OSError if taken
        self.server.daemon_threads = True
        self._wake, self._woken = socket.socketpair()  # stop() writes, the thread reads
        self.thread = threading.Thread(target=self._serve, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self, auto: bool = False) -> None:
        self.thread.start()
        log.info(LISTENING, self.port, " (a free one: SIDECAR_HTTP_PORT=auto)" if auto else "")

    def stop(self) -> None:
        if self.thread.is_alive():
            self._wake.send(b"x")
            self.thread.join(STOP_TIMEOUT)
        self.server.server_close()
        self._wake.close()
        self._woken.close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.server, selectors.EVENT_READ)
            selector.register(self._woken, selectors.EVENT_READ)
            while True:
                ready = selector.select()  # no timeout: an idle endpoint costs nothing
                if any(key.fileobj is self._woken for key, _ in ready):
                    return
                # accept and hand the connection to its thread, as serve_forever does
                self.server._handle_request_noblock()  # type: ignore[attr-defined]


class _Handler(BaseHTTPRequestHandler):
    board: Board
    registry: CollectorRegistry
    server_version = "iterum-sidecar"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.registry), content_type)
        elif path == "/healthz":
            ok, body = self.board.liveness()
            self._json(200 if ok else 503, body)
        elif path == "/readyz":
            ok, body = self.board.readiness()
            self._json(200 if ok else 503, body)
        elif path == "/debug/fragments":
            self._json(200, self.board.fragments())
        else:
            self._json(404, {"error": "not found", "endpoints": [
                "/metrics", "/healthz", "/readyz", "/debug/fragments"]})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body, indent=1).encode() + b"\n", "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
