"""pika's buffered frames go out in one send (sidecar/shell/io/pika_sends.py), and a
transport that is not as expected is left to pika as it is."""

from __future__ import annotations

from collections import deque

from pika.adapters.utils.io_services_utils import _AsyncTransportBase

from sidecar.shell.io import pika_sends


class Transport:
    def __init__(self, chunks: list[bytes]):
        self._tx_buffers = deque(chunks)
        self._tx_buffered_byte_count = sum(map(len, chunks))
        self.seen: list[list[bytes]] = []


def produce(transport: Transport) -> None:
    """pika's _produce, as far as the wrapper can tell: it sends what is buffered."""
    transport.seen.append(list(transport._tx_buffers))
    transport._tx_buffers.clear()


def test_the_installed_pika_is_wrapped_once() -> None:
    assert pika_sends.install()
    assert pika_sends.install()  # idempotent
    assert getattr(_AsyncTransportBase.__dict__["_produce"], "joins_frames", False)


def test_the_buffered_frames_are_joined_into_one_chunk() -> None:
    t = Transport([b"method", b"header", b"body"])
    pika_sends._joining(produce)(t)
    assert t.seen == [[b"methodheaderbody"]]


def test_a_large_buffer_and_an_unknown_transport_are_left_as_they_are() -> None:
    big = Transport([b"x" * pika_sends.JOIN_LIMIT, b"y"])
    pika_sends._joining(produce)(big)
    assert big.seen == [[b"x" * pika_sends.JOIN_LIMIT, b"y"]]
    odd = Transport([b"a", b"b"])
    odd._tx_buffers = [b"a", b"b"]  # type: ignore[assignment]  # not a deque: not pika's
    pika_sends._joining(produce)(odd)  # type: ignore[arg-type]
    assert odd.seen == [[b"a", b"b"]]
