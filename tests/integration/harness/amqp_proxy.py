"""A frame-aware TCP proxy in front of RabbitMQ, to watch and disturb AMQP 0-9-1 traffic.

Each client connection gets one upstream connection and two pump threads (client→broker,
broker→client). A pump parses whole frames (type u8, channel u16, size u32, payload, 0xCE),
records method frames, and forwards everything else unchanged and in order. Frames matching
the hold predicate (broker→client only) are parked until `release()`; content frames that
follow a held method on the same channel are parked with it. Everything else of the
connection keeps flowing, so held frames are the only ones that move later.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE
METHOD, HEADER, BODY, HEARTBEAT = 1, 2, 3, 8
C2B, B2C = "c2b", "b2c"  # client→broker, broker→client

METHOD_NAMES: dict[tuple[int, int], str] = {
    (10, 10): "connection.start", (10, 11): "connection.start-ok", (10, 30): "connection.tune",
    (10, 31): "connection.tune-ok", (10, 40): "connection.open", (10, 41): "connection.open-ok",
    (10, 50): "connection.close", (10, 51): "connection.close-ok",
    (10, 60): "connection.blocked", (10, 61): "connection.unblocked",
    (20, 10): "channel.open", (20, 11): "channel.open-ok", (20, 20): "channel.flow",
    (20, 21): "channel.flow-ok", (20, 40): "channel.close", (20, 41): "channel.close-ok",
    (40, 10): "exchange.declare", (40, 11): "exchange.declare-ok",
    (50, 10): "queue.declare", (50, 11): "queue.declare-ok", (50, 20): "queue.bind",
    (50, 21): "queue.bind-ok", (50, 30): "queue.purge", (50, 31): "queue.purge-ok",
    (50, 40): "queue.delete", (50, 41): "queue.delete-ok",
    (60, 10): "basic.qos", (60, 11): "basic.qos-ok", (60, 20): "basic.consume",
    (60, 21): "basic.consume-ok", (60, 30): "basic.cancel", (60, 31): "basic.cancel-ok",
    (60, 40): "basic.publish", (60, 50): "basic.return", (60, 60): "basic.deliver",
    (60, 70): "basic.get", (60, 71): "basic.get-ok", (60, 72): "basic.get-empty",
    (60, 80): "basic.ack", (60, 90): "basic.reject", (60, 100): "basic.recover-async",
    (60, 110): "basic.recover", (60, 111): "basic.recover-ok", (60, 120): "basic.nack",
    (85, 10): "confirm.select", (85, 11): "confirm.select-ok",
    (90, 10): "tx.select", (90, 11): "tx.select-ok",
}
METHOD_IDS = {name: ids for ids, name in METHOD_NAMES.items()}


@dataclass(frozen=True)
class Frame:
    """A recorded method frame."""

    conn: int  # connection number, 1-based in accept order
    direction: str  # C2B or B2C
    channel: int
    class_id: int
    method_id: int
    args: bytes  # the method arguments (payload after class-id and method-id)
    time: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return METHOD_NAMES.get((self.class_id, self.method_id),
                                f"{self.class_id}.{self.method_id}")

    @property
    def delivery_tag(self) -> int | None:
        """For basic.ack/nack/reject/get-ok (first u64) and basic.deliver (after a shortstr)."""
        if self.name in ("basic.ack", "basic.nack", "basic.reject", "basic.get-ok"):
            return struct.unpack_from(">Q", self.args, 0)[0]
        if self.name == "basic.deliver":
            return struct.unpack_from(">Q", self.args, 1 + self.args[0])[0]
        return None

    @property
    def multiple(self) -> bool | None:
        if self.name in ("basic.ack", "basic.nack"):
            return bool(self.args[8] & 1)
        return None


def is_confirm(frame: Frame) -> bool:
    """A publisher confirm: basic.ack or basic.nack sent by the broker."""
    return frame.direction == B2C and frame.name in ("basic.ack", "basic.nack")


class _Conn:
    def __init__(self, number: int, client: socket.socket, broker: socket.socket):
        self.number = number
        self.socks = {C2B: broker, B2C: client}  # destination socket per direction
        self.send_locks = {C2B: threading.Lock(), B2C: threading.Lock()}
        self.held: list[bytes] = []  # parked broker→client frames, in arrival order
        self.holding_content: set[int] = set()  # channels whose content frames are parked
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for sock in self.socks.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class AmqpProxy:
    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5672), host: str = "127.0.0.1"):
        self.upstream = upstream
        self.host = host
        self._lock = threading.Lock()
        self._frames: list[Frame] = []
        self._conns: list[_Conn] = []
        self._accepted = 0
        self._hold: Callable[[Frame], bool] | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = False
        self._listener: socket.socket | None = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="amqp-proxy",
                                          daemon=True)
        self._acceptor.start()

    def url(self, user: str = "guest", password: str = "guest", vhost: str = "/",
            **params) -> str:
        """amqp:// URL through the proxy; params become the query (e.g. heartbeat=2)."""
        query = f"?{urlencode(params)}" if params else ""
        return (f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:"
                f"{self.port}/{quote(vhost, safe='')}{query}")

    # --- controls --------------------------------------------------------------------

    def hold(self, predicate: Callable[[Frame], bool]) -> None:
        """Park broker→client frames matching `predicate` until release()."""
        with self._lock:
            self._hold = predicate

    def hold_confirms(self) -> None:
        self.hold(is_confirm)

    def release(self, keep_holding: bool = False) -> int:
        """Send the parked frames (in order, per connection); stop holding unless asked.

        Returns how many frames were released.
        """
        with self._lock:
            if not keep_holding:
                self._hold = None
            conns = list(self._conns)
        released = 0
        for conn in conns:
            # The pump sends under the same lock, so nothing parked is overtaken by a
            # frame that the pump decided on after this release.
            with conn.send_locks[B2C]:
                with self._lock:
                    frames, conn.held = conn.held, []
                    if not keep_holding:
                        conn.holding_content.clear()
                if frames and not conn.closed:
                    try:
                        conn.socks[B2C].sendall(b"".join(frames))
                        released += len(frames)
                    except OSError:
                        pass
        return released

    @property
    def held(self) -> int:
        """Number of frames parked now."""
        with self._lock:
            return sum(len(c.held) for c in self._conns)

    def stall(self) -> None:
        """Stop forwarding in both directions (heartbeats too) until resume()."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def drop_all(self) -> None:
        """Close every proxied connection (both sides); parked frames are discarded."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    def refuse_new(self, refuse: bool = True) -> None:
        """Close (refuse=True: connect() gets ECONNREFUSED) or reopen the listening port."""
        with self._lock:
            if refuse and self._listener is not None:
                # shutdown() stops listening at once; close() alone would leave the port
                # open while the accept thread still polls it (connects then get a reset).
                try:
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            elif not refuse and self._listener is None:
                self._listener = self._listen(self.port)

    def close(self) -> None:
        self._stopped = True
        self.resume()
        self.refuse_new(True)
        self.drop_all()
        self._acceptor.join(2)

    # --- records ---------------------------------------------------------------------

    def frames(self, name: str | None = None, direction: str | None = None,
               channel: int | None = None, conn: int | None = None) -> list[Frame]:
        with self._lock:
            frames = list(self._frames)
        return [f for f in frames if (name is None or f.name == name)
                and (direction is None or f.direction == direction)
                and (channel is None or f.channel == channel)
                and (conn is None or f.conn == conn)]

    def count(self, name: str, direction: str | None = None) -> int:
        return len(self.frames(name, direction))

    def wait_for(self, name: str, n: int = 1, direction: str | None = None,
                 timeout: float = 10.0) -> list[Frame]:
        """Wait until `n` method frames `name` were seen; return them or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while len(found := self.frames(name, direction)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"AMQP proxy: {len(found)} of {n} {name} after {timeout}s")
            time.sleep(0.02)
        return found

    def reset_records(self) -> None:
        with self._lock:
            self._frames.clear()

    @property
    def connections(self) -> int:
        """Connections open now."""
        with self._lock:
            return sum(1 for c in self._conns if not c.closed)

    @property
    def accepted(self) -> int:
        """Connections accepted since start."""
        return self._accepted

    # --- plumbing --------------------------------------------------------------------

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        sock.listen(64)
        sock.settimeout(0.1)  # so the accept loop notices refuse_new() and close()
        return sock

    def _accept_loop(self) -> None:
        while not self._stopped:
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                broker = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, broker):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._accepted += 1
                conn = _Conn(self._accepted, client, broker)
                self._conns.append(conn)
            for direction, src in ((C2B, client), (B2C, broker)):
                threading.Thread(target=self._pump, args=(conn, direction, src),
                                 name=f"amqp-proxy-{conn.number}-{direction}",
                                 daemon=True).start()

    def _pump(self, conn: _Conn, direction: str, src: socket.socket) -> None:
        buf = bytearray()
        # The client opens with "AMQP\0\0\x09\x01"; a broker answers with its own header
        # instead of frames only when it rejects the protocol version.
        at_start = True
        raw_mode = False  # set if the stream stops looking like AMQP frames
        try:
            while data := src.recv(1 << 16):
                buf += data
                chunks: list[tuple[bytes, bool]] = []  # (bytes, is a whole frame)
                if at_start:
                    if len(buf) < 8:
                        continue
                    if direction == C2B or buf[:4] == b"AMQP":
                        chunks.append((bytes(buf[:8]), False))
                        del buf[:8]
                    at_start = False
                while not raw_mode and len(buf) >= 7:
                    size = struct.unpack_from(">I", buf, 3)[0]
                    if len(buf) < size + 8:
                        break
                    raw = bytes(buf[:size + 8])
                    del buf[:size + 8]
                    raw_mode = raw[-1] != FRAME_END
                    chunks.append((raw, not raw_mode))
                if raw_mode and buf:
                    chunks.append((bytes(buf), False))
                    buf.clear()
                self._forward(conn, direction, chunks)
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    def _forward(self, conn: _Conn, direction: str, chunks: list[tuple[bytes, bool]]) -> None:
        while not self._flowing.wait(0.1):
            if conn.closed:
                return
        with conn.send_locks[direction]:
            out = []
            with self._lock:
                for raw, is_frame in chunks:
                    if not (is_frame and self._park(conn, direction, raw)):
                        out.append(raw)
            if out and not conn.closed:
                conn.socks[direction].sendall(b"".join(out))

    def _park(self, conn: _Conn, direction: str, raw: bytes) -> bool:
        """Record a frame; return True if it is held back. Called under self._lock."""
        ftype, channel = raw[0], struct.unpack_from(">H", raw, 1)[0]
        if ftype == METHOD and len(raw) >= 12:
            class_id, method_id = struct.unpack_from(">HH", raw, 7)
            frame = Frame(conn.number, direction, channel, class_id, method_id, raw[11:-1])
            self._frames.append(frame)
            if direction == B2C:  # holding is of broker→client frames only
                conn.holding_content.discard(channel)
                if self._hold is not None and self._hold(frame):
                    conn.held.append(raw)
                    conn.holding_content.add(channel)
                    return True
        elif direction == B2C and ftype in (HEADER, BODY) and channel in conn.holding_content:
            # the content of a held method (a delivery's header and body); the client's
            # own content frames on the same channel number (a publish) pass
            conn.held.append(raw)
            return True
        return False
