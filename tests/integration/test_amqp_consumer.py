"""The AMQP adapter's consumer against the real broker (sidecar/shell/io/amqp.py): a stop
asked for right after the start, before the broker answered the basic.qos, still ends in
ConsumerStopped, and nothing is consumed. pika drops a basic.cancel for a consumer it does
not know yet; the consumer used to be registered only on qos-ok, so that cancel was lost,
the core waited for a ConsumerStopped that never came, and deliveries flowed on."""

from __future__ import annotations

import time

from sidecar.core.events import BrokerReady, ConsumerStopped, Delivered, Event
from sidecar.shell.io.amqp import Broker
from sidecar.shell.io.pika_turns import TurnLoop

from .harness import random_id
from .harness.rabbit import Rabbit


def test_a_stop_right_after_the_start_stops_the_consumer(rabbit: Rabbit,
                                                         rabbitmq_url: str) -> None:
    queue = rabbit.declare(f"consumer-{random_id(8)}")
    for i in range(3):
        rabbit.publish(queue, {"i": i})
    loop = TurnLoop()
    events: list[Event] = []
    broker = Broker(rabbitmq_url, loop, lambda e: on_event(e), queue, retry_seconds=5)

    def on_event(e: Event) -> None:
        events.append(e)
        if isinstance(e, BrokerReady):  # both in one loop turn: no qos-ok in between
            broker.start_consuming(4)
            broker.stop_consuming()
        if isinstance(e, ConsumerStopped):
            loop.call_later(0.5, loop.stop)  # time for a delivery that should not come

    broker.connect(time.monotonic())
    loop.call_later(10, loop.stop)
    loop.start()
    broker.close(on_closed=loop.stop)
    loop.start()
    kinds = [type(e) for e in events]
    assert ConsumerStopped in kinds, kinds
    assert Delivered not in kinds, kinds
    assert rabbit.ready(queue) == 3
