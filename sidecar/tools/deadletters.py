"""`iterum-sidecar dead-letters list|requeue`: look at `<MQ_INPUT_QUEUE>-dead` and send dead
letters back to the input queue once the cause is fixed (docs/reliability.md).

It reads the broker settings from the environment, as the sidecar does (MQ_BROKER_URL or
MQ_BROKER_URL_FILE, MQ_INPUT_QUEUE, SIDECAR_AMQP_*), so `kubectl exec <pod> -c sidecar --
iterum-sidecar dead-letters list` works in a step's pod.

Listing takes every dead letter with basic.get without acking, prints it and gives them
all back (basic.nack, requeue): nothing is consumed. Requeueing republishes the original
body (persistent, with its message_id) to the input queue on a channel with publisher
confirms, and acks the dead letter only after the broker confirmed the copy. A crash in
between leaves the message in both queues, never in neither; the sidecar's deterministic
output ids make processing it twice harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import pika
from pika.exceptions import AMQPError, ChannelClosedByBroker

from ..shell import config
from ..shell.io import tls
from ..shell.logs import Redactor

DEAD_LETTERED_AT = "x-iterum-dead-lettered-at"
NOT_FOUND = 404


class CommandError(Exception):
    """A one-line reason to exit 1."""


@dataclass(frozen=True)
class DeadLetter:
    tag: int
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.properties.headers or {}

    @property
    def id(self) -> str:
        """The fragment id (the message_id the sidecar gave it), or for a body without a
        valid id, `body:` and the start of the body's SHA-256."""
        if self.properties.message_id:
            return str(self.properties.message_id)
        return "body:" + hashlib.sha256(self.body).hexdigest()[:16]

    def header(self, name: str) -> str:
        value = self.headers.get(name, "")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    @property
    def reason(self) -> str:
        return self.header("x-iterum-error-class")

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "reason": self.reason, "time": self.header(DEAD_LETTERED_AT),
                "attempts": self.header("x-iterum-attempts"),
                "state": self.header("x-iterum-state"), "step": self.header("x-iterum-step"),
                "error": self.header("x-iterum-error"),
                "body": self.body.decode("utf-8", "replace")}


def matches(letter: DeadLetter, ids: Iterable[str], reason: str | None) -> bool:
    """An --id matches a dead letter whose id starts with it; --reason is exact."""
    ids = list(ids)
    if ids and not any(letter.id.startswith(i) for i in ids):
        return False
    return reason is None or letter.reason == reason


class DeadLetterQueue:
    """One blocking connection, one channel with publisher confirms."""

    def __init__(self, settings: config.BrokerSettings):
        self.s = settings
        params = tls.amqp_parameters(settings.mq_broker_url, settings.amqp_ca_file,
                                     settings.amqp_cert_file, settings.amqp_key_file)
        params.connection_attempts = 1
        params.socket_timeout = 10
        params.blocked_connection_timeout = 30
        params.client_properties = {"connection_name": "iterum-sidecar dead-letters"}
        self.conn = pika.BlockingConnection(params)
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def close(self) -> None:
        with contextlib.suppress(AMQPError):
            if self.conn.is_open:
                self.conn.close()

    def ready(self, queue: str) -> int | None:
        """Ready messages in `queue`, or None if it does not exist."""
        try:
            return self.ch.queue_declare(queue, passive=True).method.message_count
        except ChannelClosedByBroker as err:
            if err.reply_code != NOT_FOUND:
                raise
            self.ch = self.conn.channel()  # a 404 closes the channel
            self.ch.confirm_delivery()
            return None

    def take_all(self) -> list[DeadLetter]:
        """Every dead letter ready now, unacked (they stay ours until acked or nacked)."""
        count = self.ready(self.s.dead_letter_queue)
        letters: list[DeadLetter] = []
        while count and len(letters) < count:
            method, props, body = self.ch.basic_get(self.s.dead_letter_queue, auto_ack=False)
            if method is None:
                break
            # a message (method set) has a tag, properties and a body: pika's stubs type
            # each of them Optional, for the empty queue's answer
            assert method.delivery_tag is not None and props is not None and body is not None
            letters.append(DeadLetter(method.delivery_tag, body, props,
                                      bool(method.redelivered)))
        return letters

    def give_back_rest(self) -> None:
        """Return every dead letter still unacked on this channel to its queue."""
        if self.ch.is_open:
            self.ch.basic_nack(delivery_tag=0, multiple=True, requeue=True)

    def requeue(self, letter: DeadLetter) -> None:
        """Publish the original body to the input queue, wait for the confirm, then ack."""
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                     message_id=letter.properties.message_id)
        # mandatory: an input queue deleted meanwhile raises UnroutableError, not a loss
        self.ch.basic_publish("", self.s.mq_input_queue, letter.body, props, mandatory=True)
        self.ch.basic_ack(letter.tag)


def run_dead_letters(action: str, ids: list[str], reason: str | None, every: bool,
                     as_json: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                     environ: dict[str, str] | None = None) -> int:
    try:
        settings = config.load_broker(environ)
    except config.ConfigError as error:
        print(f"iterum-sidecar: configuration error: {error}", file=err)
        return 1
    redact = Redactor(_secrets(settings))
    queue: DeadLetterQueue | None = None
    try:
        queue = DeadLetterQueue(settings)
        if queue.ready(settings.dead_letter_queue) is None:
            print(f"no dead letters: queue {settings.dead_letter_queue} does not exist",
                  file=err)
            return 0
        if action == "list":
            return _list(queue, settings, ids, reason, as_json, out, err)
        return _requeue(queue, settings, ids, reason, every, as_json, out, err)
    except CommandError as error:
        print(f"iterum-sidecar dead-letters: {redact(str(error))}", file=err)
        return 1
    except (AMQPError, OSError) as error:
        detail = str(error) or type(error).__name__
        print(f"iterum-sidecar dead-letters: broker error: {redact(detail)}", file=err)
        return 1
    finally:
        if queue is not None:
            with contextlib.suppress(AMQPError):
                queue.give_back_rest()
            queue.close()


def _list(queue: DeadLetterQueue, s: config.BrokerSettings, ids: list[str],
          reason: str | None, as_json: bool, out: TextIO, err: TextIO) -> int:
    letters = [d for d in queue.take_all() if matches(d, ids, reason)]
    queue.give_back_rest()  # listing consumes nothing
    if as_json:
        for d in letters:
            print(json.dumps(d.as_json(), ensure_ascii=False), file=out)
    else:
        _table(letters, out)
    print(f"{len(letters)} dead letter(s) in {s.dead_letter_queue}", file=err)
    return 0


def _requeue(queue: DeadLetterQueue, s: config.BrokerSettings, ids: list[str],
             reason: str | None, every: bool, as_json: bool, out: TextIO, err: TextIO) -> int:
    if queue.ready(s.mq_input_queue) is None:
        raise CommandError(f"the input queue {s.mq_input_queue} does not exist; nothing "
                           "was requeued")
    letters = queue.take_all()
    chosen = [d for d in letters if matches(d, [] if every else ids, reason)]
    unmatched = [i for i in ids if not any(d.id.startswith(i) for d in chosen)]
    for d in chosen:
        queue.requeue(d)
        if as_json:
            print(json.dumps({"requeued": d.id, "reason": d.reason}), file=out)
        else:
            print(f"requeued {d.id} ({d.reason or 'no reason'})", file=out)
    queue.give_back_rest()
    left = len(letters) - len(chosen)
    print(f"{len(chosen)} dead letter(s) requeued to {s.mq_input_queue}; {left} left in "
          f"{s.dead_letter_queue}", file=err)
    if unmatched:
        raise CommandError("no dead letter with id " + ", ".join(unmatched))
    return 0


def _table(letters: list[DeadLetter], out: TextIO) -> None:
    rows = [("ID", "REASON", "DEAD-LETTERED AT", "ATTEMPTS", "ERROR")]
    rows += [(d.id, d.reason or "-", d.header(DEAD_LETTERED_AT) or "-",
              d.header("x-iterum-attempts") or "-", _short(d.header("x-iterum-error")))
             for d in letters]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4],
              file=out)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _secrets(settings: config.BrokerSettings) -> tuple[str, ...]:
    from urllib.parse import unquote, urlsplit

    password = urlsplit(settings.mq_broker_url).password or ""
    return tuple(v for v in (password, unquote(password)) if v)
