"""RabbitMQ helpers for the tests (pika BlockingConnection; use from one thread only)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pika
import pytest
from pika.exceptions import AMQPError

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ITERUM_FLAGS = {"durable": False, "auto_delete": False, "exclusive": False}  # protocol §5.2
NOT_RUNNING = ("RabbitMQ is not answering on 127.0.0.1:5672; start it with "
               "`rabbitmq-server -detached`")


def require_rabbitmq(url: str = DEFAULT_URL) -> None:
    """Fail (not skip) the test run when the broker is down: these tests need it."""
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 3
    params.blocked_connection_timeout = 3
    try:
        pika.BlockingConnection(params).close()
    except Exception as err:
        pytest.fail(f"{NOT_RUNNING} ({type(err).__name__}: {err})", pytrace=False)


@dataclass
class Message:
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool
    routing_key: str

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}

    def json(self) -> Any:
        return json.loads(self.body)


def queue_counts(name: str, vhost: str = "/") -> tuple[int, int]:
    """(messages_ready, messages_unacknowledged) of a queue, from `rabbitmqctl` (~0.6 s).

    Raises LookupError if the queue does not exist.
    """
    exe = shutil.which("rabbitmqctl") or "rabbitmqctl"
    out = subprocess.run(
        [exe, "-q", "list_queues", "-p", vhost, "name", "messages_ready",
         "messages_unacknowledged", "--formatter", "json"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    for name_, ready, unacked in _parse_list_queues(out):
        if name_ == name:
            return ready, unacked
    raise LookupError(f"queue {name!r} does not exist (vhost {vhost!r})")


def close_connections(name_contains: str, reason: str = "test") -> int:
    """Have the broker close (CONNECTION_FORCED) every connection whose client-provided
    `connection_name` contains `name_contains`; return how many it closed.

    This is `rabbitmqctl close_all_connections` aimed at one test's clients: the broker is
    shared (other test runs, other worktrees), and closing everyone's connections would
    disturb them. From the client's side both are the same forced close.
    """
    exe = shutil.which("rabbitmqctl") or "rabbitmqctl"
    # The tab-separated form: its pids (<node.N.N.N>) are what close_connection takes (the
    # JSON formatter prints #PID<...>, which it does not).
    out = subprocess.run([exe, "-q", "list_connections", "pid", "client_properties"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    closed = 0
    for line in out.splitlines()[1:]:
        pid, _, props = line.partition("\t")
        name = re.search(r'\{"connection_name","([^"]*)"\}', props)
        if name and name_contains in name.group(1):
            subprocess.run([exe, "-q", "close_connection", pid, reason],
                           capture_output=True, text=True, timeout=60, check=True)
            closed += 1
    return closed


def _parse_list_queues(out: str) -> list[tuple[str, int, int]]:
    """JSON output when available; otherwise tab-separated rows (headers/banners skipped)."""
    try:
        rows = json.loads(out)
        return [(r["name"], int(r["messages_ready"]), int(r["messages_unacknowledged"]))
                for r in rows]
    except (ValueError, TypeError, KeyError):
        pass
    result = []
    for line in out.splitlines():
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 3 and parts[-1].strip().isdigit() and parts[-2].strip().isdigit():
            result.append(("\t".join(parts[:-2]), int(parts[-2]), int(parts[-1])))
    return result


class Rabbit:
    """One connection and channel for a test; deletes the queues it declared at close()."""

    def __init__(self, url: str = DEFAULT_URL):
        self.url = url
        self.queues: set[str] = set()
        self._conn: pika.BlockingConnection | None = None
        self._ch = None

    @property
    def channel(self):
        if self._conn is None or self._conn.is_closed:
            self._conn = pika.BlockingConnection(pika.URLParameters(self.url))
            self._ch = None
        if self._ch is None or self._ch.is_closed:
            self._ch = self._conn.channel()
            self._ch.confirm_delivery()  # publish() returns once the broker has the message
        return self._ch

    def declare(self, name: str) -> str:
        """Declare a queue with the Iterum flags and delete it at close()."""
        self.channel.queue_declare(name, **ITERUM_FLAGS)
        self.queues.add(name)
        return name

    def track(self, name: str) -> str:
        """Delete this queue at close() (e.g. one that the sidecar declares)."""
        self.queues.add(name)
        return name

    def publish(self, queue: str, body: Any, *, headers: dict | None = None,
                message_id: str | None = None, declare: bool = True) -> None:
        """Publish as the Iterum peers do: default exchange, persistent, application/json.

        A dict/list body is serialised as JSON; str is encoded as UTF-8.
        """
        if declare:
            self.declare(queue)
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                     headers=headers, message_id=message_id)
        self.channel.basic_publish("", queue, body, props)

    def get(self, queue: str, ack: bool = True) -> Message | None:
        """One message (acked unless ack=False: then it stays unacked on this channel)."""
        method, props, body = self.channel.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        if ack:
            self.channel.basic_ack(method.delivery_tag)
        return Message(body, props, method.redelivered, method.routing_key)

    def drain(self, queue: str, count: int | None = None, timeout: float = 10.0) -> list[Message]:
        """Take messages off a queue (acking them).

        With `count`, wait up to `timeout` until that many arrived (raise TimeoutError with
        what was got otherwise); without, return what is there now.
        """
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while count is None or len(got) < count:
            msg = self.get(queue)
            if msg is not None:
                got.append(msg)
                continue
            if count is None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{queue}: got {len(got)} of {count} messages in {timeout}s: "
                                   f"{[m.body[:200] for m in got]}")
            self._conn.process_data_events(time_limit=0.05)  # also keeps heartbeats going
        return got

    def ready(self, queue: str) -> int:
        """Ready messages via a passive declare (fast; unacked ones are not counted)."""
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def exists(self, queue: str) -> bool:
        try:
            self.channel.queue_declare(queue, passive=True)
            return True
        except AMQPError:  # 404 closes the channel; the next use reopens it
            return False

    def queue_counts(self, queue: str) -> tuple[int, int]:
        return queue_counts(queue)

    def purge(self, queue: str) -> None:
        self.channel.queue_purge(queue)

    def delete(self, queue: str) -> None:
        try:
            self.channel.queue_delete(queue)
        except AMQPError:
            pass
        self.queues.discard(queue)

    def close(self) -> None:
        try:
            for queue in sorted(self.queues):
                self.delete(queue)
        finally:
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
