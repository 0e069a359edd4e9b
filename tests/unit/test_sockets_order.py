"""The socket server announces a new tts connection only after what already waits on fts
(sidecar/shell/io/sockets.py): a transformation that outlived a killed sidecar finishes its
fragment with the new one before it asks for work, and the sidecar must see that first
(docs/reliability.md, case 7). Real UNIX sockets; the loop is a stand-in that only records
handlers, and the accept callbacks are called by hand in the worst order."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from sidecar.core import events as ev
from sidecar.core.protocol import frame
from sidecar.shell.io.sockets import SocketServer


class Loop:
    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {}

    def add_handler(self, fd: int, handler: Any, _events: int) -> None:
        self.handlers[fd] = handler

    def update_handler(self, fd: int, _events: int) -> None:
        pass

    def remove_handler(self, fd: int) -> None:
        self.handlers.pop(fd, None)


def test_frames_waiting_on_fts_come_before_a_new_tts_connection(tmp_path: Path) -> None:
    events: list[ev.Event] = []
    server = SocketServer(Loop(), events.append, 1 << 20)
    tts, fts = str(tmp_path / "tts.sock"), str(tmp_path / "fts.sock")
    server.listen(tts, "tts")
    server.listen(fts, "fts")
    listener = {channel: fd for fd, (_, _, channel) in server.listeners.items()}
    out = socket.socket(socket.AF_UNIX)
    out.connect(fts)  # the transformation's fts connection, not yet accepted
    out.sendall(frame(b'{"files": [], "metadata": {"predecessors": ["x"]}}')
                + frame(b'{"fragment_id": "x"}'))
    into = socket.socket(socket.AF_UNIX)
    into.connect(tts)  # then it asks for work
    server._on_accept(listener["tts"], 0)  # the loop saw the tts accept first
    kinds = [(type(e).__name__, getattr(e, "channel", "")) for e in events]
    assert kinds == [("Connected", "fts"), ("FrameReceived", ""), ("FrameReceived", ""),
                     ("Connected", "tts")]
    server._on_accept(listener["fts"], 0)  # nothing left to accept
    assert len(events) == 4
    out.close()
    into.close()
    server.shutdown()
