"""Publishes, their confirms and the acks they lead to in sidecar/shell/io/amqp.py, with
fake pika channels: multiple confirms, nacks, returned messages, a confirm of a connection
given up, and the acks the core gives while a confirm frame is handled (sent together as
one multiple ack where exact, and before the connection closes when the exit comes
meanwhile)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from pika.spec import Basic

from sidecar.core.events import Event, PublishConfirmed, PublishRejected
from sidecar.shell.io.amqp import Broker


@dataclass
class FakeChannel:
    calls: list[tuple[Any, ...]]
    is_open: bool = True

    def basic_publish(self, exchange: str, queue: str, body: bytes, props: Any,
                      mandatory: bool) -> None:
        # the properties object is refilled per publish: what counts is its state now
        self.calls.append(("publish", queue, body, props.message_id, props.headers))

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.calls.append(("ack", tag, multiple))


@dataclass
class FakeConnection:
    calls: list[tuple[Any, ...]]
    is_open: bool = True

    def close(self) -> None:
        self.calls.append(("close",))
        self.is_open = False


@dataclass
class Setup:
    broker: Broker
    events: list[Event] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)


def setup(on_event: Any = None) -> Setup:
    s = Setup(broker=None)  # type: ignore[arg-type]

    def post(e: Event) -> None:
        s.events.append(e)
        if on_event:
            on_event(s.broker, e)

    b = s.broker = Broker("amqp://guest:guest@127.0.0.1:5672/%2F", ioloop=None, post=post,
                          input_queue="in")
    b.ready = True
    b.conn = FakeConnection(s.calls)  # type: ignore[assignment]
    b.publish_ch = b.consume_ch = FakeChannel(s.calls)  # type: ignore[assignment]
    b.queues.declared.add("out")
    return s


def confirm(b: Broker, method: Any) -> None:
    b._on_confirm(b.generation, SimpleNamespace(method=method))


def test_publishes_confirmed_one_by_one_and_several_at_once() -> None:
    s = setup()
    b = s.broker
    b.publish(11, "out", b"a", "m1", ())
    b.publish(12, "out", b"b", "m2", (("x-h", "v"),))
    b.publish(13, "out", b"c", None, ())
    assert s.calls == [("publish", "out", b"a", "m1", None),
                       ("publish", "out", b"b", "m2", {"x-h": "v"}),
                       ("publish", "out", b"c", None, None)]
    confirm(b, Basic.Ack(delivery_tag=2, multiple=True))
    assert s.events == [PublishConfirmed(11), PublishConfirmed(12)]
    confirm(b, Basic.Nack(delivery_tag=3))
    confirm(b, Basic.Ack(delivery_tag=3))  # settled already: nothing
    assert s.events[2:] == [PublishRejected(13, "nack")]
    assert not b.unconfirmed


def test_a_returned_message_is_rejected_and_an_old_connection_ignored() -> None:
    s = setup()
    b = s.broker
    b.publish(1, "out", b"a", "m1", ())
    b.publish(2, "out", b"b", "m2", ())
    b._on_return(None, SimpleNamespace(routing_key="out", reply_text="NO_ROUTE"),  # type: ignore[arg-type]
                 SimpleNamespace(message_id="m2"), b"b")
    b._on_confirm(b.generation - 1, SimpleNamespace(method=Basic.Ack(2, multiple=True)))
    assert s.events == []
    confirm(b, Basic.Ack(delivery_tag=2, multiple=True))
    assert s.events == [PublishConfirmed(1), PublishRejected(2, "returned: no such queue")]
    assert not b.returned


def acking(b: Broker, e: Event) -> None:
    if isinstance(e, PublishConfirmed):
        b.ack(e.publish_id)  # the core acks input #publish_id once its output is safe


def test_the_acks_of_one_confirm_frame_go_out_as_one_where_exact() -> None:
    s = setup(acking)
    b = s.broker
    for tag in (1, 2, 3, 4):
        b.acks.delivered(tag)
    for pid in (1, 2, 4):
        b.publish(pid, "out", b"x", None, ())
    s.calls.clear()
    confirm(b, Basic.Ack(delivery_tag=3, multiple=True))
    assert s.calls == [("ack", 2, True), ("ack", 4, False)]  # 3 is not acked: no cover
    b.ack(3)  # outside a confirm frame: at once
    assert s.calls[-1] == ("ack", 3, False) and not b.acks.outstanding


def test_an_exit_while_acks_are_held_sends_them_before_the_close() -> None:
    def ack_then_exit(b: Broker, e: Event) -> None:
        acking(b, e)
        b.close(on_closed=lambda: None)

    s = setup(ack_then_exit)
    b = s.broker
    b.acks.delivered(1)
    b.publish(1, "out", b"x", None, ())
    s.calls.clear()
    confirm(b, Basic.Ack(delivery_tag=1))
    assert s.calls == [("ack", 1, False), ("close",)]
