"""One send(2) for all the AMQP frames pika has buffered, not one per frame, and no
write watcher when that send takes them all.

pika's transports buffer each frame the connection emits (a publish is three: method,
header and body; an ack one) and, once the socket is writable, send the buffer one chunk
at a time: a system call and a pass through pika's send wrappers per frame, seven for a
1→1 fragment. Joining the buffered chunks just before pika's own ``_produce`` sends them
makes it one send per writable event. pika still does the send, the partial-send
bookkeeping, TLS and the errors exactly as before; only the chunks are fewer. Past
``JOIN_LIMIT`` bytes buffered (a broker that does not keep up) nothing is joined, so a
partial send never copies a large remainder.

pika's plaintext transport, given a frame while nothing is buffered, registers write
interest on the socket (an ``epoll_ctl``), sends when the next poll reports it writable and
unregisters it (a second ``epoll_ctl``): two system calls per burst of frames, about one a
fragment. Instead, the first frame of a burst asks the loop for a call at the end of the
current turn (``call_later(0)``: pika's IOLoop runs due timers after each poll's events, so
the frames of the whole turn are buffered by then), which runs pika's own writable handler
at once. Only what the socket does not take then is left to pika's write watcher, exactly
as pika would; a transport no longer active by then has dropped its frames with the
connection, as it would have anyway.

This is pika's private API (``_AsyncTransportBase._produce``, ``_tx_buffers``,
``_tx_buffered_byte_count``; ``_AsyncPlaintextTransport.write``, ``_buffer_tx_data``,
``_on_socket_writable``, ``_state``, ``_nbio``, ``_sock``; pika 1.x), contained here:
``install`` checks at start-up that they are there and installs nothing otherwise, and the
wrappers leave a transport without them to pika as it is. pika then sends frame by frame
from its write watcher, as it always did. TLS connections are pika's own throughout.
"""

from __future__ import annotations

import importlib
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

log = logging.getLogger("sidecar.amqp")
JOIN_LIMIT = 256 * 1024  # bytes buffered at most to join into one send
_installed: list[bool] = []  # [whether both wrappers are in place], once decided
_WRITE_NEEDS = ("_buffer_tx_data", "_on_socket_writable", "_STATE_ACTIVE")


def install() -> bool:
    """Wrap pika's transport ``_produce`` and plaintext ``write`` (once per process); False
    when pika is not as expected for either, and that one was not changed."""
    if not _installed:
        joined = _replace("_AsyncTransportBase", "_produce", _joining,
                          "frames are sent one by one")
        deferred = _replace("_AsyncPlaintextTransport", "write", _deferring,
                            "its write watcher stays", _WRITE_NEEDS)
        _installed.append(joined and deferred)
    return _installed[0]


def _replace(class_name: str, method: str, wrapper: Callable[[Any], Any], fallback: str,
             needs: tuple[str, ...] = ()) -> bool:
    """Put ``wrapper(method)`` in place on pika's transport class, once; False, changing
    nothing, when the class, the method or what the wrapper ``needs`` is not there."""
    try:
        cls = getattr(importlib.import_module("pika.adapters.utils.io_services_utils"),
                      class_name, None)
    except ImportError:
        cls = None
    original = getattr(cls, "__dict__", {}).get(method)
    if (not callable(original) or getattr(original, "wrapped_here", False)
            or not all(hasattr(cls, name) for name in needs)):
        log.debug("pika's %s.%s is not as expected: %s", class_name, method, fallback)
        return False
    replacement = wrapper(original)
    replacement.wrapped_here = True  # not wrapped twice
    setattr(cls, method, replacement)
    return True


def _joining(produce: Callable[[Any], None]) -> Callable[[Any], None]:
    def joined_produce(transport: Any) -> None:
        buffers = getattr(transport, "_tx_buffers", None)
        if (type(buffers) is deque and len(buffers) > 1
                and getattr(transport, "_tx_buffered_byte_count", JOIN_LIMIT) < JOIN_LIMIT):
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)
        produce(transport)

    return joined_produce


def _deferring(write: Callable[[Any, bytes], None]) -> Callable[[Any, bytes], None]:
    def deferred_write(transport: Any, data: bytes) -> None:
        buffers, nbio = getattr(transport, "_tx_buffers", None), getattr(transport, "_nbio", None)
        if (buffers or type(buffers) is not deque or nbio is None or not data
                or getattr(transport, "_state", None) != transport._STATE_ACTIVE):
            write(transport, data)  # behind frames already buffered, or pika's own checks
            return
        transport._buffer_tx_data(data)
        nbio.call_later(0, partial(_send_buffered, transport))

    return deferred_write


def _send_buffered(transport: Any) -> None:
    """At the end of the turn that buffered a first frame: send like pika's writable
    handler (errors abort the transport there, as they always did); watch for writability
    only when something is left."""
    if transport._state != transport._STATE_ACTIVE or not transport._tx_buffers:
        return  # aborted meanwhile: the frames went with the connection
    transport._on_socket_writable()
    if transport._state == transport._STATE_ACTIVE and transport._tx_buffers:
        transport._nbio.set_writer(transport._sock.fileno(), transport._on_socket_writable)
