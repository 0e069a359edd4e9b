"""pika's buffered frames go out in one send (sidecar/shell/io/pika_sends.py), at the end
of the loop turn and with no write watcher unless the socket leaves some unsent, and a
transport that is not as expected is left to pika as it is."""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport, _AsyncTransportBase

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
    assert getattr(_AsyncTransportBase.__dict__["_produce"], "wrapped_here", False)
    assert getattr(_AsyncPlaintextTransport.__dict__["write"], "wrapped_here", False)


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


class Loop:
    """pika's I/O services as the transport uses them: what it asked for is recorded."""

    def __init__(self) -> None:
        self.later: list[Callable[[], None]] = []
        self.writers: list[int] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        assert delay == 0
        self.later.append(callback)

    def set_reader(self, fd: int, _callback: Any) -> None:
        pass

    def set_writer(self, fd: int, _callback: Any) -> None:
        self.writers.append(fd)

    def remove_writer(self, fd: int) -> bool:
        if fd in self.writers:
            self.writers.remove(fd)
            return True
        return False

    def turn_ends(self) -> None:
        later, self.later = self.later, []
        for callback in later:
            callback()


def transport() -> tuple[Any, Loop, socket.socket]:
    assert pika_sends.install()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    loop = Loop()
    return _AsyncPlaintextTransport(ours, object(), loop), loop, theirs  # type: ignore[arg-type]


def test_a_turns_frames_go_in_one_send_at_its_end_without_a_write_watcher() -> None:
    t, loop, peer = transport()
    for frame in (b"method", b"header", b"body"):
        t.write(frame)
    assert len(loop.later) == 1 and not loop.writers  # nothing sent yet, no watcher
    loop.turn_ends()
    assert peer.recv(100) == b"methodheaderbody"
    assert not loop.writers and not t._tx_buffers
    t.write(b"ack")  # the next turn starts over
    assert len(loop.later) == 1
    loop.turn_ends()
    assert peer.recv(100) == b"ack"


def test_what_the_socket_does_not_take_is_left_to_pikas_write_watcher() -> None:
    t, loop, peer = transport()
    big = b"x" * (1 << 16)
    for _ in range(64):  # more than the socket buffers hold
        t.write(big)
    loop.turn_ends()
    assert t._tx_buffers and loop.writers == [t._sock.fileno()]
    peer.setblocking(False)
    received = 0
    while t._tx_buffers:
        try:
            received += len(peer.recv(1 << 20))
        except BlockingIOError:
            pass
        t._on_socket_writable()  # pika's handler, as the loop calls it when writable
    assert not loop.writers  # pika took its watcher off once all was sent
    peer.setblocking(True)
    while received < 64 * len(big):
        received += len(peer.recv(1 << 20))


def test_a_transport_closed_before_the_turn_ends_sends_nothing() -> None:
    t, loop, peer = transport()
    t.write(b"frame")
    t._state = t._STATE_ABORTED_BY_USER  # aborted by something later in the turn
    loop.turn_ends()
    peer.setblocking(False)
    try:
        assert peer.recv(100) == b""
    except BlockingIOError:
        pass
    assert not loop.writers


class Protocol:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


class Counted(socket.socket):
    """A socket whose reads are counted, EAGAIN included."""

    reads = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        Counted.reads += 1
        return super().recv(size, flags)


def test_reading_stops_at_a_short_read_and_the_rest_waits_for_the_next_poll() -> None:
    t, _loop, peer = transport()
    t._protocol = Protocol()
    limit = t._MAX_RECV_BYTES
    peer.sendall(b"a" * (limit + 10))
    t._consume()  # a full read, then a short one that empties the queue: no EAGAIN read
    assert b"".join(t._protocol.received) == b"a" * (limit + 10)
    peer.sendall(b"later")
    t._consume()
    assert t._protocol.received[-1] == b"later"
    peer.close()
    try:
        t._consume()
    except t.RxEndOfFile:
        pass
    else:
        raise AssertionError("EOF not raised")


def test_a_socket_that_is_not_a_plain_one_is_read_by_pika() -> None:
    t, _loop, peer = transport()
    t._protocol = Protocol()
    ours = t._sock
    t._sock = Counted(fileno=ours.detach())
    t._sock.setblocking(False)
    peer.sendall(b"x")
    try:
        t._consume()  # pika's own: reads until EAGAIN
    except BlockingIOError:
        pass
    assert Counted.reads == 2 and t._protocol.received == [b"x"]


def test_a_failing_protocol_is_logged_as_pika_logs_it_and_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    class Failing(Protocol):
        def data_received(self, data: bytes) -> None:
            raise ValueError("bad frame")

    t, _loop, peer = transport()
    t._protocol = Failing()
    peer.sendall(b"x")
    with caplog.at_level(logging.ERROR, "pika"), pytest.raises(ValueError, match="bad frame"):
        t._consume()
    assert any("protocol.data_received() failed" in r.getMessage() for r in caplog.records)
