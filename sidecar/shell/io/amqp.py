"""RabbitMQ through pika's SelectConnection, on the same I/O loop as the sockets.

One connection with two channels: one consumes (QoS, consume, ack, cancel, queue
inspection), one publishes with publisher confirms (windowed: many publishes in flight,
each confirmed asynchronously). Queues are declared with the Iterum flags (§5.2) after a
passive declare, so a queue an operator made durable or quorum is used as it is (§16.16;
sidecar/shell/io/queues.py).

A lost connection (or a channel the broker closed) is reopened with jittered exponential
backoff for up to SIDECAR_BROKER_RETRY_SECONDS, the channels and queues set up again, and
BrokerLost / BrokerReady tell the core (docs/reliability.md). Past the budget, BrokerLost
with ``retrying=False`` ends the run. The backoff itself is sidecar/shell/io/reconnect.py.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from itertools import takewhile
from time import monotonic
from typing import Any

from pika.adapters.select_connection import SelectConnection
from pika.channel import Channel
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic

from ...core.events import (
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
from ..hooks import NO_HOOKS, BrokerHooks
from . import pika_frames, pika_publish, pika_sends
from .acks import Acks
from .queues import Queues
from .reconnect import Backoff, describe
from .tls import amqp_parameters

log = logging.getLogger("sidecar.amqp")
Unconfirmed = tuple[int, str, "str | None", bytes, float]


class Broker:
    """The connection and its channels, reopened after a loss (docs/reliability.md).

    Every connection gets a generation number; callbacks of an older generation are
    ignored, so nothing of a dead connection (a late close, a confirm) reaches the core
    after it was told about the loss. Delivery tags and publisher-confirm sequence numbers
    are per channel: both start again on a new connection, which the core knows (all tags
    void, all unconfirmed publishes sent again).
    """

    def __init__(self, url: str, ioloop: Any, post: Callable[[Event], None], input_queue: str,
                 predeclare: tuple[str, ...] = (), retry_seconds: float = 180.0,
                 tls_files: tuple[str, str, str] = ("", "", ""), hooks: BrokerHooks = NO_HOOKS):
        # amqps://: verify the broker against SIDECAR_AMQP_CA_FILE, present the client
        # certificate SIDECAR_AMQP_CERT_FILE/KEY_FILE (tls_files: ca, cert, key)
        self.params = amqp_parameters(url, *tls_files)
        self.params.client_properties = {"connection_name": f"iterum-sidecar {input_queue}"}
        self.ioloop = ioloop
        self.post = post
        self.input_queue = input_queue
        self.predeclare = predeclare
        self.retry_seconds = retry_seconds
        self.conn: SelectConnection | None = None
        self.consume_ch: Channel | None = None
        self.publish_ch: Channel | None = None
        self.consumer_tag = f"{input_queue}-consumer-{random.randrange(1 << 31)}"
        self.queues = Queues(refused=self._declare_failed)  # the declared queues
        self.acks = Acks()  # the consuming channel's outstanding deliveries
        # confirm sequence number -> (publish id, queue, message id, body, monotonic time of
        # the publish), in the order published
        self.unconfirmed: OrderedDict[int, Unconfirmed] = OrderedDict()
        self.returned: set[int] = set()
        self.hooks = hooks  # confirm latency for the metrics (sidecar/shell/metrics.py)
        self.next_tag = 0
        self.closing = False
        self.on_closed: Callable[[], None] | None = None
        self.generation = 0
        self.ready = False  # BrokerReady was posted for the current connection
        self.reconnecting = False  # between a loss (or the start) and the next BrokerReady
        self._backoff = Backoff(retry_seconds)
        self._retry_timer: Any = None
        # pika's publish frames written with less work (or basic_publish as it is)
        self._publisher = pika_publish.Publisher("application/json", delivery_mode=2)

    # --- connection ------------------------------------------------------------------

    def connect(self, now: float) -> None:
        pika_sends.install()  # one send per loop turn, not per frame (or pika as it is)
        pika_frames.install()  # confirms handled with less work (or pika as it is)
        self._backoff.start(time.monotonic())
        self.reconnecting = True
        self._open()

    def _open(self) -> None:
        self._retry_timer = None
        if self.closing:
            return
        self._backoff.attempting()
        self.generation += 1
        gen = self.generation
        self.conn = SelectConnection(
            self.params,
            on_open_callback=self._guarded(gen, self._on_open),
            on_open_error_callback=lambda _c, err: self._on_open_error(gen, err),
            on_close_callback=lambda _c, reason: self._on_close(gen, reason),
            custom_ioloop=self.ioloop)

    @property
    def address(self) -> str:
        """host:port of the broker, for the log (never the credentials)."""
        return f"{self.params.host}:{self.params.port}"

    def _current(self, gen: int) -> bool:
        return gen == self.generation and not self.closing

    def _guarded(self, gen: int, callback: Callable[..., object]) -> Callable[..., None]:
        """``callback`` for pika, called only while generation ``gen`` is current."""
        def call(*args: Any) -> None:
            if self._current(gen):
                callback(*args)
        return call

    def _on_open_error(self, gen: int, err: BaseException) -> None:
        if self.closing:
            self._finish_close()
        elif gen == self.generation:
            self._retry(f"cannot connect to the broker at {self.address}: {describe(err)}")

    def _retry(self, problem: str) -> None:
        """Try again after a jittered exponential backoff, within the budget."""
        now, backoff = time.monotonic(), self._backoff
        if backoff.spent(now):
            self.reconnecting = False
            self.post(BrokerLost(backoff.gave_up(problem), retrying=False))
            return
        delay = backoff.delay(now)
        # One line per attempt, naming what it waits for; pika's own records of the same
        # failure are off below DEBUG (sidecar/shell/logs.py).
        failed = f" (attempt {backoff.attempt})" if backoff.attempt else ""
        log.warning("%s%s; next attempt in %.1fs, %.0fs left of "
                    "SIDECAR_BROKER_RETRY_SECONDS=%gs", problem, failed, delay,
                    backoff.left(now), self.retry_seconds)
        self._retry_timer = self.ioloop.call_later(delay, self._open)

    def _on_open(self, conn: SelectConnection) -> None:
        gen = self.generation
        conn.channel(on_open_callback=self._guarded(
            gen, lambda ch: self._on_consume_channel(gen, ch)))

    def _on_consume_channel(self, gen: int, ch: Channel) -> None:
        self.consume_ch = ch
        self.acks.clear()  # the delivery tags start again on a new channel
        ch.add_on_close_callback(lambda c, reason: self._on_channel_closed(gen, c, reason))
        ch.add_on_cancel_callback(
            self._guarded(gen, lambda _frame: self.post(ConsumerCancelledByBroker())))
        assert self.conn is not None
        self.conn.channel(on_open_callback=self._guarded(
            gen, lambda c: self._on_publish_channel(gen, c)))

    def _on_publish_channel(self, gen: int, ch: Channel) -> None:
        self.publish_ch = ch
        ch.add_on_close_callback(lambda c, reason: self._on_channel_closed(gen, c, reason))
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(partial(self._on_confirm, gen),
                            callback=self._guarded(gen, lambda _f: self._declare_all(gen)))

    def _declare_all(self, gen: int) -> None:
        queues = [self.input_queue, *self.predeclare]
        remaining = set(queues)

        def done(queue: str) -> None:
            remaining.discard(queue)
            if not remaining and self._current(gen):
                self.ready = True
                self.reconnecting = False
                self._backoff.connected()
                self.post(BrokerReady())

        for queue in queues:
            self.ensure_queue(queue, partial(done, queue))

    def _on_channel_closed(self, gen: int, ch: Channel, reason: BaseException) -> None:
        """The broker closed a working channel (not the connection): start over."""
        if self._current(gen) and isinstance(reason, ChannelClosedByBroker):
            self._lost(f"channel {ch.channel_number} closed: {reason}")

    def _on_close(self, gen: int, reason: BaseException) -> None:
        if self.closing:
            self._finish_close()
        elif gen == self.generation:
            self._lost(f"connection to {self.address} closed: {describe(reason)}")

    def _lost(self, problem: str) -> None:
        """Forget everything of this connection, tell the core (once per outage), retry."""
        old = self.conn
        self._send_acks(self.acks.release())  # if the consuming channel is still open
        self.acks.clear()
        self.generation += 1  # the old connection's callbacks are void from now on
        self.consume_ch = self.publish_ch = None
        self.queues.clear()
        self.unconfirmed.clear()
        self.returned.clear()
        self.next_tag = 0
        if old is not None and old.is_open:
            old.close()  # a channel failed: drop the rest of the connection too
        if not self.reconnecting:
            self.reconnecting = True
            self._backoff.begin_outage(time.monotonic(), problem)
        if self.ready:  # the core logs the loss ([broker-lost]), _retry each attempt
            self.ready = False
            self.post(BrokerLost(problem))
        self._retry(problem)

    def close(self, on_closed: Callable[[], None]) -> None:
        self._send_acks(self.acks.release())  # the exit may come while acks are held
        self.closing = True
        self.on_closed = on_closed
        if self._retry_timer is not None:
            self.ioloop.remove_timeout(self._retry_timer)
            self._retry_timer = None
        conn = self.conn
        if conn is not None and conn.is_open:
            conn.close()  # its close callback finishes the close
        elif conn is not None and not (conn.is_closed or conn.is_closing):
            self._abandon_opening()
        else:
            self._finish_close()

    def _abandon_opening(self) -> None:
        """A connection still opening (pika has no is_opening: neither open, closed nor
        closing) is left alone. pika cannot abort it once the AMQP handshake has begun:
        close() then ends in an AssertionError inside pika (its connection workflow reports
        the abort as a class, not an instance), and the external workflow's abort() asserts
        as well. Nothing was taken on it, its callbacks are void (closing), the close
        finishes now, and the process's exit closes the socket without another word, which
        is what AMQP 0-9-1 asks of a peer that gives up before the connection is open."""
        log.debug("leaving the broker connection that is still opening to the exit")
        self._finish_close()

    def _finish_close(self) -> None:
        callback, self.on_closed = self.on_closed, None
        if callback:
            callback()

    # --- queues ----------------------------------------------------------------------

    def ensure_queue(self, queue: str, then: Callable[[], None]) -> None:
        """``then()`` once ``queue`` exists (sidecar/shell/io/queues.py)."""
        gen = self.generation
        self.queues.ensure(self.conn, lambda: self._current(gen), queue, then)

    def _declare_failed(self, queue: str, reason: BaseException) -> None:
        """The broker refuses the queue itself: reconnecting would not change that."""
        self.post(BrokerLost(f"cannot declare queue {queue!r}: {reason}", retrying=False))

    # --- consuming -------------------------------------------------------------------

    # While the connection is down these do nothing: the core knows (BrokerLost) and
    # starts consuming, inspects and publishes again after the next BrokerReady.

    def _channel(self) -> Channel | None:
        ch = self.consume_ch
        return ch if self.ready and ch is not None and ch.is_open else None

    def start_consuming(self, prefetch: int) -> None:
        ch = self._channel()
        if ch is None:
            return
        gen = self.generation

        def on_message(_ch: Channel, method: Basic.Deliver, _props: Any, body: bytes) -> None:
            # a delivery always has its tag; pika's stubs type the field Optional
            tag = method.delivery_tag
            assert tag is not None
            if gen == self.generation:
                self.acks.delivered(tag)  # outstanding on the channel, posted or not
                if not self.closing:
                    self.post(Delivered(tag, body, bool(method.redelivered)))

        # Both now (the broker applies the qos first): pika knows the consumer at once, so
        # a stop before the qos-ok is sent, not dropped as a cancel of an unknown consumer.
        ch.basic_qos(prefetch_count=prefetch)
        ch.basic_consume(self.input_queue, on_message, auto_ack=False,
                         consumer_tag=self.consumer_tag)

    def stop_consuming(self) -> None:
        self._send_acks(self.acks.release())  # in the order the core gave them
        ch = self._channel()
        if ch is not None:
            gen = self.generation
            ch.basic_cancel(self.consumer_tag, callback=self._guarded(
                gen, lambda _f: self.post(ConsumerStopped())))

    def inspect_queue(self) -> None:
        """§5.4: a passive declare; message_count counts ready messages only."""
        ch = self._channel()
        if ch is not None:
            gen = self.generation
            ch.queue_declare(self.input_queue, passive=True, callback=self._guarded(
                gen, lambda f: self.post(QueueInspected(f.method.message_count))))

    def ack(self, tag: int) -> None:
        if self.acks.take(tag):
            return  # sent when the confirm frame that led to it is handled
        ch = self._channel()
        if ch is not None:
            self.acks.settled(tag)
            ch.basic_ack(tag)

    def nack(self, tag: int, requeue: bool) -> None:
        self._send_acks(self.acks.release())  # in the order the core gave them
        ch = self._channel()
        if ch is not None:
            self.acks.settled(tag)
            ch.basic_nack(tag, requeue=requeue)

    def _send_acks(self, sends: list[tuple[int, bool]]) -> None:
        """Acks released by ``self.acks`` (sidecar/shell/io/acks.py)."""
        ch = self._channel() if sends else None
        if ch is not None:
            for tag, multiple in sends:
                ch.basic_ack(tag, multiple)

    # --- publishing ------------------------------------------------------------------

    def publish(self, publish_id: int, queue: str, body: bytes, message_id: str | None,
                headers: tuple[tuple[str, str], ...]) -> None:
        if queue in self.queues.declared:  # on this connection: the common case
            self._publish(publish_id, queue, body, message_id, headers)
            return
        self.ensure_queue(queue, lambda: self._publish(publish_id, queue, body, message_id,
                                                       headers))

    def _publish(self, publish_id: int, queue: str, body: bytes, message_id: str | None,
                 headers: tuple[tuple[str, str], ...]) -> None:
        ch = self.publish_ch
        if not self.ready or ch is None or not ch.is_open:
            return  # lost: the core sends it again after the next BrokerReady
        self._publisher.publish(ch, queue, body, message_id, headers)
        self.next_tag += 1
        self.unconfirmed[self.next_tag] = (publish_id, queue, message_id, body, monotonic())

    def _on_return(self, _ch: Channel, method: Basic.Return, props: Any, body: bytes) -> None:
        """mandatory=True: an unroutable message (its queue was deleted) comes back first."""
        for tag, (_, queue, message_id, sent, _at) in self.unconfirmed.items():
            if tag not in self.returned and (queue, message_id, sent) == (
                    method.routing_key, props.message_id, body):
                self.returned.add(tag)
                log.error("message to %r returned: %s", queue, method.reply_text)
                return

    def _on_confirm(self, gen: int, frame: Any) -> None:
        """A Basic.Ack or Basic.Nack of the broker, for one publish or (multiple) for all
        up to its sequence number."""
        if not self._current(gen):
            return  # of a connection given up: the core sends those publishes again
        method = frame.method
        last: int = method.delivery_tag
        # multiple: every publish up to ``last`` (unconfirmed is in sequence order)
        tags = list(takewhile(last.__ge__, self.unconfirmed)) if method.multiple else [last]
        holding = self.acks.hold()  # the acks these confirms lead to: sent together
        try:
            self._settle(tags, type(method) is Basic.Ack, monotonic())
        finally:
            if holding:
                self._send_acks(self.acks.stop())

    def _settle(self, tags: list[int], ok: bool, now: float) -> None:
        unconfirmed, on_confirm, post = self.unconfirmed, self.hooks.on_confirm, self.post
        for tag in tags:
            entry = unconfirmed.pop(tag, None)
            if entry is None:
                continue
            if self.returned and tag in self.returned:
                self.returned.discard(tag)
                on_confirm("returned", now - entry[4])
                post(PublishRejected(entry[0], "returned: no such queue"))
            elif ok:
                on_confirm("ack", now - entry[4])
                post(PublishConfirmed(entry[0]))
            else:
                on_confirm("nack", now - entry[4])
                post(PublishRejected(entry[0], "nack"))

