"""The endpoints a benchmark run talks to: its S3 server process, the local RabbitMQ, a manager.

The manager is a stand-in that always answers ``{"finished": false}``: the sidecar polls it
as in a cluster (every ``SIDECAR_MANAGER_POLL_INTERVAL``, 5 s by default) and the benchmark
ends each sidecar with SIGTERM once its fragments are acked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pika

from . import procstat
from .s3server import BENCH_AGENT

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
ACCESS_KEY, SECRET_KEY = "bench-access-key", "bench-secret-key"
ITERUM_FLAGS = {"durable": False, "auto_delete": False, "exclusive": False}


class S3Endpoint:
    """``python -m bench.s3server`` in a child process (its own CPU account and GIL)."""

    def __init__(self, server: str, threads: int = 16, log: Path | None = None):
        self.server = server
        self._log = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.s3server", "--server", server,
             "--threads", str(threads)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"the S3 server ({server}) did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"127.0.0.1:{self.port}"  # MINIO_URL: host:port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return procstat.tree_cpu(self.pid)

    def stats(self, reset: bool = False) -> dict[str, Any]:
        path = "/_bench/reset" if reset else "/_bench/stats"
        req = urllib.request.Request(f"http://{self.url}{path}",
                                     method="POST" if reset else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def client(self):
        """The benchmark's own client (setup, checks): tagged, so never counted."""
        from .raw import client

        return client(self.url, ACCESS_KEY, SECRET_KEY, 8, agent=BENCH_AGENT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                for child in _children(self.proc.pid):
                    child.kill()
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def _children(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


class FakeManager:
    """Answers every upstream check with ``{"finished": false}``; counts the polls."""

    def __init__(self) -> None:
        self.polls = 0
        manager = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                manager.polls += 1
                body = b'{"finished": false}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="bench-manager")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Broker:
    """A blocking pika connection for setup: declare, publish, inspect, delete."""

    def __init__(self, url: str = DEFAULT_BROKER):
        self.url = url
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()

    def declare(self, queue: str) -> None:
        self.ch.queue_declare(queue, **ITERUM_FLAGS)

    def publish(self, queue: str, body: bytes) -> None:
        """As the fragmenter does: default exchange, persistent, JSON (no confirm wait)."""
        self.ch.basic_publish("", queue, body, pika.BasicProperties(
            delivery_mode=2, content_type="application/json"))

    def counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue."""
        m = self.ch.queue_declare(queue, passive=True).method
        return m.message_count, m.consumer_count

    def wait_consumers(self, queue: str, n: int, timeout: float) -> float:
        """Poll until ``queue`` has ``n`` consumers; return the time it happened."""
        deadline = time.monotonic() + timeout
        while True:
            if self.counts(queue)[1] >= n:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{queue}: fewer than {n} consumer(s) after {timeout}s")
            time.sleep(0.005)

    def delete(self, queue: str) -> None:
        try:
            self.ch.queue_delete(queue)
        except pika.exceptions.AMQPError:
            if self.ch.is_closed:
                self.ch = self.conn.channel()

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


class Arrivals:
    """Consumes a queue on its own thread and connection; records when each message came."""

    def __init__(self, url: str, queue: str):
        self.url = url
        self.queue = queue
        self.times: list[float] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-arrivals")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"could not consume {queue}: {self._error}")

    def _run(self) -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1000)

            def on_message(_ch: Any, _method: Any, _props: Any, _body: bytes) -> None:
                with self._cond:
                    self.times.append(time.monotonic())
                    self._cond.notify_all()

            ch.basic_consume(self.queue, on_message, auto_ack=True)
            self._ready.set()
            while not self._stop.is_set():
                conn.process_data_events(time_limit=0.05)
            conn.close()
        except BaseException as err:  # reported by wait()
            self._error = err
            self._ready.set()
            with self._cond:
                self._cond.notify_all()

    @property
    def count(self) -> int:
        with self._cond:
            return len(self.times)

    def wait(self, n: int, timeout: float, alive: Any = None) -> float:
        """Wait until ``n`` messages came; return the time of the n-th.

        ``alive()`` is checked every 0.5 s: it raises if a process we wait on has died.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.times) < n:
                if self._error is not None:
                    raise RuntimeError(f"consuming {self.queue} failed: {self._error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.queue}: {len(self.times)} of {n} messages "
                                       f"after {timeout:.0f}s")
                self._cond.wait(min(left, 0.5))
                if alive is not None:
                    alive()
            return self.times[n - 1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
