"""The two UNIX sockets the transformation connects to (§4), on the loop's selector.

The sidecar listens on both; each is one-way. Reads are non-blocking and framed with
read-exact semantics; writes are buffered per connection and flushed when writable, so a
slow reader never blocks the loop. Write interest is registered only while something is
left unsent (a frame that goes out at once costs no ``epoll_ctl``), and reads go into one
buffer kept for the server (a fresh ``recv`` buffer of ``READ_CHUNK`` bytes is an mmap,
mremap and munmap for each read).

Who may connect: the socket files get ``SIDECAR_SOCKET_MODE`` (0660) before ``listen()``,
so no connection is accepted while they are more open; with ``SIDECAR_PEER_UID`` a
connection whose peer (``SO_PEERCRED``) runs as another uid is closed at once, logged and
counted, and never reaches the core.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from pika.adapters.select_connection import PollEvents

from ...core.events import Connected, Disconnected, Event, FrameReceived, FrameRejected
from ...core.protocol import FrameDecoder, FrameTooLarge, frame
from ..hooks import NO_HOOKS, SocketHooks

log = logging.getLogger("sidecar.sockets")
READ_CHUNK = 1 << 16  # bytes read at most per recv_into
_conn_ids = itertools.count(1)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected UNIX socket."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


class Connection:
    def __init__(self, sock: socket.socket, channel: str, max_frame: int):
        self.id = next(_conn_ids)
        self.sock = sock
        self.channel = channel
        self.decoder = FrameDecoder(max_frame)
        self.outbox = bytearray()
        self.broken = False  # framing lost: ignore further input


class SocketServer:
    """Listens on tts.sock and fts.sock; posts Connected/Disconnected/FrameReceived."""

    def __init__(self, ioloop: Any, post: Callable[[Event], None], max_frame: int,
                 mode: int = 0o660, peer_uid: int | None = None,
                 hooks: SocketHooks = NO_HOOKS):
        self.ioloop = ioloop
        self.post = post
        self.max_frame = max_frame
        self.mode = mode
        self.peer_uid = peer_uid
        self.listeners: dict[int, tuple[socket.socket, str, str]] = {}
        self.conns: dict[int, Connection] = {}
        self.hooks = hooks  # refused connections counted by sidecar/shell/metrics.py
        self._chunk = bytearray(READ_CHUNK)  # one read at a time: on the loop thread
        self._view = memoryview(self._chunk)

    def listen(self, path: str, channel: str) -> None:
        if self.peer_uid is not None and not hasattr(socket, "SO_PEERCRED"):
            raise OSError(f"SIDECAR_PEER_UID needs SO_PEERCRED, which this platform lacks "
                          f"({path})")
        try:
            os.unlink(path)  # a stale file from a previous run (§4.1)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, self.mode)  # before listen(): nobody connects while it is wider
        sock.listen(16)
        sock.setblocking(False)
        self.listeners[sock.fileno()] = (sock, path, channel)
        self.ioloop.add_handler(sock.fileno(), self._on_accept, PollEvents.READ)

    def _on_accept(self, fd: int, _events: int) -> None:
        self._accept(fd)

    def _accept(self, fd: int) -> bool:
        """Accept one connection; False when none is waiting."""
        listener, _, channel = self.listeners[fd]
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return False
        if self.peer_uid is not None and not self._peer_allowed(sock, channel):
            sock.close()
            return True  # accepted and refused: there may be more waiting
        sock.setblocking(False)
        conn = Connection(sock, channel, self.max_frame)
        self.conns[conn.id] = conn
        self.ioloop.add_handler(sock.fileno(), lambda _fd, ev: self._on_io(conn, ev),
                                PollEvents.READ)
        if channel == "tts":
            self._drain_fts()
        self.post(Connected(conn.id, channel))
        return True

    def _drain_fts(self) -> None:
        """Before a new tts connection is announced, read what is already waiting on fts.

        pyterum finishes a fragment (its outputs and done_with on fts.sock) before it reads
        the next one on tts.sock. A transformation that outlived a killed sidecar does
        that with the new sidecar; those frames must be seen before the new sidecar hands
        it a fragment again, or a redelivered input's outputs would be counted twice
        (docs/reliability.md, case 7). Everything they wrote is already in the socket
        buffers: the connect to tts.sock came after it.
        """
        for fd, (_, _, channel) in list(self.listeners.items()):
            if channel == "fts":
                while self._accept(fd):
                    pass
        for conn in [c for c in self.conns.values() if c.channel == "fts"]:
            while conn.id in self.conns and self._read(conn):
                pass

    def _peer_allowed(self, sock: socket.socket, channel: str) -> bool:
        try:
            pid, uid, _gid = peer_credentials(sock)
        except OSError as err:
            pid, uid = 0, -1
            log.warning("cannot read the peer's credentials on %s.sock: %s", channel, err)
        if uid == self.peer_uid:
            return True
        log.warning("connection to %s.sock refused: the peer (pid %d) runs as uid %d, "
                    "SIDECAR_PEER_UID allows only uid %d", channel, pid, uid, self.peer_uid,
                    extra={"code": "peer-refused"})
        self.hooks.on_refused(channel)
        return False

    def _on_io(self, conn: Connection, events: int) -> None:
        if events & PollEvents.WRITE:
            self._flush(conn, watching=True)
        if conn.id in self.conns and events & (PollEvents.READ | PollEvents.ERROR):
            self._read(conn)

    def _read(self, conn: Connection) -> bool:
        """Read once; True if something was read (there may be more)."""
        try:
            size = conn.sock.recv_into(self._chunk)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as err:
            log.warning("connection %d (%s) failed: %s", conn.id, conn.channel, err)
            size = 0
        if not size:
            self._drop(conn)
            return False
        if conn.channel == "tts":
            log.warning("connection %d wrote %d bytes on tts.sock, which is one-way; ignored",
                        conn.id, size)
            return True
        if conn.broken:
            return True
        try:
            frames = conn.decoder.feed(self._view[:size])  # copied into its buffer
        except FrameTooLarge as err:
            conn.broken = True
            self.post(FrameRejected(conn.id, str(err)))
            return True
        for payload in frames:
            self.post(FrameReceived(conn.id, payload))
        return True

    def send(self, conn_id: int, payload: bytes) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            log.warning("frame for closed connection %d dropped; the core re-sends on reconnect",
                        conn_id)
            return
        pending = bool(conn.outbox)
        conn.outbox += frame(payload)
        if not pending:
            self._flush(conn, watching=False)

    def _flush(self, conn: Connection, watching: bool) -> None:
        """Send what the outbox holds; ``watching``: write interest is registered (the
        outbox was not empty), and it changes only when that changes."""
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            if err.errno not in (errno.EPIPE, errno.ECONNRESET):
                log.warning("connection %d: %s", conn.id, err)
            self._drop(conn)
            return
        del conn.outbox[:sent]
        if bool(conn.outbox) != watching:
            events = PollEvents.READ | (PollEvents.WRITE if conn.outbox else 0)
            self.ioloop.update_handler(conn.sock.fileno(), events)

    def close(self, conn_id: int) -> None:
        conn = self.conns.get(conn_id)
        if conn is not None:
            self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        if self.conns.pop(conn.id, None) is None:
            return
        self.ioloop.remove_handler(conn.sock.fileno())
        conn.sock.close()
        if conn.outbox:
            log.warning("connection %d closed with %d bytes unsent", conn.id, len(conn.outbox))
        self.post(Disconnected(conn.id, conn.channel))

    def shutdown(self) -> None:
        """Flush what can be flushed without blocking, close everything, remove the files."""
        for conn in list(self.conns.values()):
            if conn.outbox:
                try:
                    conn.sock.setblocking(True)
                    conn.sock.settimeout(1.0)
                    conn.sock.sendall(conn.outbox)
                except OSError:
                    pass
            self.ioloop.remove_handler(conn.sock.fileno())
            conn.sock.close()
        self.conns.clear()
        for fd, (sock, path, _) in list(self.listeners.items()):
            self.ioloop.remove_handler(fd)
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.listeners.clear()
