"""Write interest on a transformation's socket is registered only while a frame is left
unsent (sidecar/shell/io/sockets.py): a frame that goes out at once changes nothing on
the loop, one the peer is not reading yet is watched until it has gone, and frames read
through the server's one buffer arrive whole. Real UNIX sockets; the loop is a stand-in
that records what was asked of it."""

from __future__ import annotations

import socket
import threading
from typing import Any

from pika.adapters.select_connection import PollEvents

from sidecar.core import events as ev
from sidecar.core.protocol import frame
from sidecar.shell.io.sockets import READ_CHUNK, Connection, SocketServer


class Loop:
    def __init__(self) -> None:
        self.updates: list[int] = []

    def add_handler(self, fd: int, handler: Any, _events: int) -> None:
        pass

    def update_handler(self, _fd: int, events: int) -> None:
        self.updates.append(events)

    def remove_handler(self, fd: int) -> None:
        pass


def connected(server: SocketServer, channel: str) -> tuple[Connection, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    conn = Connection(ours, channel, 1 << 20)
    server.conns[conn.id] = conn
    return conn, theirs


def test_write_interest_only_while_something_is_unsent() -> None:
    loop = Loop()
    server = SocketServer(loop, [].append, 1 << 20)
    conn, peer = connected(server, "tts")
    server.send(conn.id, b"small")
    assert loop.updates == []  # sent at once: nothing to watch
    big = b"x" * (4 << 20)  # more than the socket buffers hold
    server.send(conn.id, big)
    assert conn.outbox and loop.updates == [PollEvents.READ | PollEvents.WRITE]
    server.send(conn.id, b"queued")  # behind the rest: no change
    assert len(loop.updates) == 1
    peer.setblocking(False)
    received = bytearray()
    while conn.outbox:
        try:
            received += peer.recv(1 << 20)
        except BlockingIOError:
            pass
        server._on_io(conn, PollEvents.WRITE)  # the loop reports it writable
    assert loop.updates == [PollEvents.READ | PollEvents.WRITE, PollEvents.READ]
    peer.setblocking(True)
    expected = frame(b"small") + frame(big) + frame(b"queued")
    while len(received) < len(expected):
        received += peer.recv(1 << 20)
    assert received == expected
    peer.close()
    server.shutdown()


def test_frames_larger_than_a_read_arrive_whole() -> None:
    events: list[ev.Event] = []
    server = SocketServer(Loop(), events.append, 1 << 22)
    conn, peer = connected(server, "fts")
    conn.decoder.max_size = 1 << 22
    payloads = [b"a" * (READ_CHUNK * 2 + 3), b"{}", b"b" * 5]
    data = b"".join(frame(p) for p in payloads)
    writer = threading.Thread(target=peer.sendall, args=(data,))
    writer.start()  # more than the socket buffers may hold
    while len(events) < len(payloads) and conn.id in server.conns:
        server._read(conn)
    writer.join()
    assert [e.payload for e in events if isinstance(e, ev.FrameReceived)] == payloads
    peer.close()
    server.shutdown()
