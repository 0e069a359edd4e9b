"""A transformation without pyterum: raw connections to tts.sock and fts.sock, for the tests
that must send what pyterum never would (garbage, oversized headers, odd messages) or
disconnect at a chosen moment. Framing as in protocol §4.2: a 4-byte little-endian length,
then the JSON payload."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<I")


class RawTransformation:
    def __init__(self, volume: Path, timeout: float = 20.0, *, tts: bool = True,
                 fts: bool = True):
        self.tts = _connect(volume / "tts.sock", timeout) if tts else None
        self.fts = _connect(volume / "fts.sock", timeout) if fts else None

    def receive(self, timeout: float = 20.0) -> Any:
        """The next message on tts.sock, decoded."""
        assert self.tts is not None
        self.tts.settimeout(timeout)
        (size,) = HEADER.unpack(_exactly(self.tts, HEADER.size))
        return json.loads(_exactly(self.tts, size))

    def send(self, message: Any) -> None:
        """A message on fts.sock: a dict/list as JSON, bytes as the payload verbatim."""
        payload = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.send_raw(HEADER.pack(len(payload)) + payload)

    def send_raw(self, data: bytes) -> None:
        assert self.fts is not None
        self.fts.sendall(data)

    def fts_closed_by_peer(self, timeout: float = 10.0) -> bool:
        """Did the sidecar close our fts connection (it never writes on it)?"""
        assert self.fts is not None
        self.fts.settimeout(timeout)
        try:
            return self.fts.recv(1) == b""
        except (TimeoutError, OSError) as err:
            return isinstance(err, ConnectionResetError)

    def close(self) -> None:
        for sock in (self.tts, self.fts):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def _connect(path: Path, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the sidecar")
        data += chunk
    return bytes(data)
