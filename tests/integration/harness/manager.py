"""A fake Iterum manager: only `GET /pipeline/<hash>/<name>/upstream_finished` (protocol §9)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTE = re.compile(r"^/pipeline/([^/]+)/([^/]+)/upstream_finished$")
DROP = "drop"  # a scripted "response" that closes the connection without answering


@dataclass
class ManagerRequest:
    method: str
    path: str
    pipeline_hash: str | None
    name: str | None
    status: int | None  # None when the connection was dropped
    time: float = field(default_factory=time.monotonic)


class FakeManager:
    """Answers `{"finished": <self.finished>}` unless a scripted response is queued.

    `expect(hash, name)` makes other hashes/names answer 404, like an unknown pipeline.
    """

    def __init__(self, finished: bool = False):
        self.finished = finished
        self.expected: tuple[str, str] | None = None
        self._script: deque[Any] = deque()
        self._lock = threading.Lock()
        self._requests: list[ManagerRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"  # MANAGER_URL (no trailing slash)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-manager",
                                        daemon=True)
        self._thread.start()

    def expect(self, pipeline_hash: str, name: str) -> None:
        self.expected = (pipeline_hash, name)

    def finish(self, finished: bool = True) -> None:
        self.finished = finished

    def script(self, *responses: Any) -> None:
        """Queue responses used (once each, in order) before falling back to `finished`.

        Each is a status code (empty body), `(status, body)` with body bytes/str/dict/None
        (a dict is sent as JSON), or DROP. Example: script(404, 500, (200, "not json")).
        """
        with self._lock:
            self._script.extend(responses)

    def requests(self) -> list[ManagerRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def polls(self) -> int:
        return sum(1 for r in self.requests() if r.pipeline_hash is not None)

    def wait_for_polls(self, n: int = 1, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while (got := self.polls) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake manager: {got} of {n} polls after {timeout}s")
            time.sleep(0.02)
        return got

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _answer(self, path: str) -> tuple[Any, str | None, str | None]:
        """(response, hash, name) for one request; response as accepted by script()."""
        match = ROUTE.match(path.split("?", 1)[0])
        if not match:
            return 404, None, None
        pipeline_hash, name = match.groups()
        with self._lock:
            if self._script:
                return self._script.popleft(), pipeline_hash, name
        if self.expected is not None and self.expected != (pipeline_hash, name):
            return 404, pipeline_hash, name
        return (200, {"finished": bool(self.finished)}), pipeline_hash, name


def _handler(manager: FakeManager) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            response, pipeline_hash, name = manager._answer(self.path)
            status, body = (None, None) if response == DROP else (
                response if isinstance(response, tuple) else (response, None))
            with manager._lock:  # recorded before answering, so a caller never races it
                manager._requests.append(
                    ManagerRequest("GET", self.path, pipeline_hash, name, status))
            if status is None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(body, dict):
                body = json.dumps(body)
            data = body.encode() if isinstance(body, str) else (body or b"")
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    return Handler
