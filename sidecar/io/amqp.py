"""RabbitMQ through pika's SelectConnection, on the same I/O loop as the sockets.

One connection with two channels: one consumes (QoS, consume, ack, cancel, queue
inspection), one publishes with publisher confirms (windowed: many publishes in flight,
each confirmed asynchronously). Queues are declared with the Iterum flags (§5.2) after a
passive declare, so a queue an operator made durable or quorum is used as it is (§16.16).
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pika
from pika.channel import Channel
from pika.spec import Basic

from ..events import (
    BrokerLost,
    BrokerReady,
    ConsumerCancelledByBroker,
    ConsumerStopped,
    Delivered,
    Event,
    PublishConfirmed,
    PublishRejected,
    QueueInspected,
)
from ..tls import amqp_parameters

log = logging.getLogger("sidecar.amqp")
ITERUM_FLAGS = {"durable": False, "auto_delete": False, "exclusive": False}
NOT_FOUND = 404


class Broker:
    def __init__(self, url: str, ioloop: Any, post: Callable[[Event], None], input_queue: str,
                 predeclare: tuple[str, ...] = (), connect_seconds: float = 60.0,
                 tls_files: tuple[str, str, str] = ("", "", "")):
        # amqps://: verify the broker against SIDECAR_AMQP_CA_FILE, present the client
        # certificate SIDECAR_AMQP_CERT_FILE/KEY_FILE (tls_files: ca, cert, key)
        self.params = amqp_parameters(url, *tls_files)
        self.params.client_properties = {"connection_name": f"iterum-sidecar {input_queue}"}
        self.ioloop = ioloop
        self.post = post
        self.input_queue = input_queue
        self.predeclare = predeclare
        self.connect_seconds = connect_seconds
        self.conn: pika.SelectConnection | None = None
        self.consume_ch: Channel | None = None
        self.publish_ch: Channel | None = None
        self.consumer_tag = f"{input_queue}-consumer-{random.randrange(1 << 31)}"
        self.declared: set[str] = set()
        self.waiting: dict[str, list[Callable[[], None]]] = {}
        self.unconfirmed: OrderedDict[int, tuple[int, str, str | None, bytes]] = OrderedDict()
        self.returned: set[int] = set()
        self.sent_at: dict[int, float] = {}  # delivery tag -> monotonic time of the publish
        # metrics (sidecar/metrics.py): result ("ack", "nack", "returned"), seconds
        self.on_confirm: Callable[[str, float], None] = lambda _result, _seconds: None
        self.next_tag = 0
        self.closing = False
        self.on_closed: Callable[[], None] | None = None
        self._connect_deadline = 0.0
        self._attempt = 0

    # --- connection ------------------------------------------------------------------

    def connect(self, now: float) -> None:
        self._connect_deadline = now + self.connect_seconds
        self._open()

    def _open(self) -> None:
        self._attempt += 1
        self.conn = pika.SelectConnection(
            self.params, on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_close, custom_ioloop=self.ioloop)

    def _on_open_error(self, _conn: Any, err: BaseException) -> None:
        if self.closing:
            self._finish_close()
            return
        if time.monotonic() >= self._connect_deadline:
            self.post(BrokerLost(f"cannot connect to the broker: {err}"))
            return
        delay = min(10.0, 0.5 * 2 ** min(self._attempt, 5)) * random.uniform(0.5, 1.0)
        log.warning("broker not reachable (%s); retrying in %.1fs", err, delay)
        self.ioloop.call_later(delay, self._open)

    def _on_open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_consume_channel)

    def _on_consume_channel(self, ch: Channel) -> None:
        self.consume_ch = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.add_on_cancel_callback(lambda _frame: self.post(ConsumerCancelledByBroker()))
        assert self.conn is not None
        self.conn.channel(on_open_callback=self._on_publish_channel)

    def _on_publish_channel(self, ch: Channel) -> None:
        self.publish_ch = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(self._on_confirm, callback=lambda _f: self._declare_all())

    def _declare_all(self) -> None:
        queues = [self.input_queue, *self.predeclare]
        remaining = set(queues)

        def done(queue: str) -> None:
            remaining.discard(queue)
            if not remaining:
                self.post(BrokerReady())

        for queue in queues:
            self.ensure_queue(queue, lambda q=queue: done(q))

    def _on_channel_closed(self, ch: Channel, reason: BaseException) -> None:
        if not self.closing:
            self.post(BrokerLost(f"channel {ch.channel_number} closed: {reason}"))

    def _on_close(self, _conn: Any, reason: BaseException) -> None:
        if self.closing:
            self._finish_close()
        else:
            self.post(BrokerLost(f"connection closed: {reason}"))

    def close(self, on_closed: Callable[[], None]) -> None:
        self.closing = True
        self.on_closed = on_closed
        # pika's connections have no is_opening: open and opening are "not closed or
        # closing", and close() is legal in both (an opening one is aborted).
        if self.conn is not None and not (self.conn.is_closed or self.conn.is_closing):
            self.conn.close()
        else:
            self._finish_close()

    def _finish_close(self) -> None:
        callback, self.on_closed = self.on_closed, None
        if callback:
            callback()

    # --- queues ----------------------------------------------------------------------

    def ensure_queue(self, queue: str, then: Callable[[], None]) -> None:
        """Passive declare; if the queue is missing, declare it with the Iterum flags."""
        if queue in self.declared:
            then()
            return
        if queue in self.waiting:
            self.waiting[queue].append(then)
            return
        self.waiting[queue] = [then]
        assert self.conn is not None
        self.conn.channel(on_open_callback=lambda ch: self._declare_passive(ch, queue))

    def _declare_passive(self, ch: Channel, queue: str) -> None:
        def on_closed(_ch: Channel, reason: BaseException) -> None:
            if getattr(reason, "reply_code", None) == NOT_FOUND and not self.closing:
                assert self.conn is not None
                self.conn.channel(on_open_callback=lambda c: self._declare(c, queue))
            elif queue in self.waiting and not self.closing:
                self.post(BrokerLost(f"cannot declare queue {queue!r}: {reason}"))

        ch.add_on_close_callback(on_closed)
        ch.queue_declare(queue, passive=True, callback=lambda _f: self._declared(ch, queue))

    def _declare(self, ch: Channel, queue: str) -> None:
        ch.add_on_close_callback(
            lambda _c, reason: queue in self.waiting and not self.closing and self.post(
                BrokerLost(f"cannot declare queue {queue!r}: {reason}")))
        ch.queue_declare(queue, **ITERUM_FLAGS, callback=lambda _f: self._declared(ch, queue))

    def _declared(self, ch: Channel, queue: str) -> None:
        self.declared.add(queue)
        callbacks = self.waiting.pop(queue, [])
        ch.close()
        for then in callbacks:
            then()

    # --- consuming -------------------------------------------------------------------

    def start_consuming(self, prefetch: int) -> None:
        assert self.consume_ch is not None
        ch = self.consume_ch
        ch.basic_qos(prefetch_count=prefetch, callback=lambda _f: ch.basic_consume(
            self.input_queue, self._on_message, auto_ack=False, consumer_tag=self.consumer_tag))

    def _on_message(self, _ch: Channel, method: Basic.Deliver, _props: Any,
                    body: bytes) -> None:
        self.post(Delivered(method.delivery_tag, body, bool(method.redelivered)))

    def stop_consuming(self) -> None:
        if self.consume_ch is not None and self.consume_ch.is_open:
            self.consume_ch.basic_cancel(self.consumer_tag,
                                         callback=lambda _f: self.post(ConsumerStopped()))

    def inspect_queue(self) -> None:
        """§5.4: a passive declare; message_count counts ready messages only."""
        assert self.consume_ch is not None
        self.consume_ch.queue_declare(
            self.input_queue, passive=True,
            callback=lambda f: self.post(QueueInspected(f.method.message_count)))

    def ack(self, tag: int) -> None:
        if self.consume_ch is not None and self.consume_ch.is_open:
            self.consume_ch.basic_ack(tag)

    def nack(self, tag: int, requeue: bool) -> None:
        if self.consume_ch is not None and self.consume_ch.is_open:
            self.consume_ch.basic_nack(tag, requeue=requeue)

    # --- publishing ------------------------------------------------------------------

    def publish(self, publish_id: int, queue: str, body: bytes, message_id: str | None,
                headers: tuple[tuple[str, str], ...]) -> None:
        self.ensure_queue(queue, lambda: self._publish(publish_id, queue, body, message_id,
                                                       headers))

    def _publish(self, publish_id: int, queue: str, body: bytes, message_id: str | None,
                 headers: tuple[tuple[str, str], ...]) -> None:
        if self.publish_ch is None or not self.publish_ch.is_open:
            return  # BrokerLost has been posted; the core gives everything up
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                     message_id=message_id, headers=dict(headers) or None)
        self.publish_ch.basic_publish("", queue, body, props, mandatory=True)
        self.next_tag += 1
        self.unconfirmed[self.next_tag] = (publish_id, queue, message_id, body)
        self.sent_at[self.next_tag] = time.monotonic()

    def _on_return(self, _ch: Channel, method: Basic.Return, props: Any, body: bytes) -> None:
        """mandatory=True: an unroutable message (its queue was deleted) comes back first."""
        for tag, (_, queue, message_id, sent) in self.unconfirmed.items():
            if tag not in self.returned and (queue, message_id, sent) == (
                    method.routing_key, props.message_id, body):
                self.returned.add(tag)
                log.error("message to %r returned: %s", queue, method.reply_text)
                return

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, Basic.Ack)
        tags = ([t for t in self.unconfirmed if t <= method.delivery_tag] if method.multiple
                else [method.delivery_tag])
        now = time.monotonic()
        for tag in tags:
            entry = self.unconfirmed.pop(tag, None)
            if entry is None:
                continue
            returned = tag in self.returned
            self.returned.discard(tag)
            sent = self.sent_at.pop(tag, now)
            self.on_confirm("returned" if returned else "ack" if ok else "nack", now - sent)
            if ok and not returned:
                self.post(PublishConfirmed(entry[0]))
            else:
                self.post(PublishRejected(entry[0], "returned: no such queue" if returned
                                          else "nack"))
