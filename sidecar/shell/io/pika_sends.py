"""pika's transport with fewer system calls: one send(2) for all the AMQP frames pika has
buffered, not one per frame; no write watcher when that send takes them all; no read that
can only fail with EAGAIN.

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

pika's plaintext transport reads a readable socket in ``_MAX_RECV_BYTES`` chunks until
``recv`` raises EAGAIN: nearly every readable event is a read that returns the frames and
a second that fails (an exception through pika's handlers). A read shorter than asked
for has emptied the socket's receive queue, so the replacement ``_consume`` stops there;
anything that arrives later is reported by the next poll (level-triggered) as before.

This is pika's private API (``_AsyncTransportBase._produce``, ``_tx_buffers``,
``_tx_buffered_byte_count``; ``_AsyncPlaintextTransport.write``, ``_buffer_tx_data``,
``_on_socket_writable``, ``_state``, ``_nbio``, ``_sock``; ``_consume``,
``_sigint_safe_recv``, ``_protocol``, ``RxEndOfFile`` and the two read limits; pika 1.x),
contained here:
``install`` checks at start-up that they are there and installs nothing otherwise, and the
wrappers leave a transport without them to pika as it is. pika then sends frame by frame
from its write watcher and reads until EAGAIN, as it always did. TLS connections are
pika's own throughout.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

log = logging.getLogger("sidecar.amqp")
_pika_log = logging.getLogger("pika.adapters.utils.io_services_utils")
JOIN_LIMIT = 256 * 1024  # bytes buffered at most to join into one send
_installed: list[bool] = []  # [whether all the wrappers are in place], once decided
_WRITE_NEEDS = ("_buffer_tx_data", "_on_socket_writable", "_STATE_ACTIVE")
_READ_NEEDS = ("_sigint_safe_recv", "RxEndOfFile", "_STATE_ACTIVE", "_MAX_RECV_BYTES",
               "_MAX_CONSUME_BYTES")


def install() -> bool:
    """Wrap pika's transport ``_produce``, plaintext ``write`` and ``_consume`` (once per
    process); False when pika is not as expected for one, and that one was not changed."""
    if not _installed:
        joined = _replace("_AsyncTransportBase", "_produce", _joining,
                          "frames are sent one by one")
        deferred = _replace("_AsyncPlaintextTransport", "write", _deferring,
                            "its write watcher stays", _WRITE_NEEDS)
        drained = _replace("_AsyncPlaintextTransport", "_consume", _until_short,
                           "it reads until EAGAIN", _READ_NEEDS)
        _installed.append(joined and deferred and drained)
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
    original = getattr(cls, method, None)  # its own or inherited
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


def _until_short(consume: Callable[[Any], None]) -> Callable[[Any], None]:
    def consume_until_short(transport: Any) -> None:
        """pika's ``_consume`` (its limits, EOF and errors), ending at a short read."""
        if type(getattr(transport, "_sock", None)) is not socket.socket:
            consume(transport)  # not the plain socket this was checked against
            return
        limit, consumed = transport._MAX_RECV_BYTES, 0
        while (transport._state == transport._STATE_ACTIVE
               and consumed < transport._MAX_CONSUME_BYTES):
            data = transport._sigint_safe_recv(transport._sock, limit)
            if not data:
                _pika_log.error("Socket EOF; %s", transport._sock)  # as pika logs it
                raise transport.RxEndOfFile()
            consumed += len(data)
            try:
                transport._protocol.data_received(data)
            except Exception as error:  # logged as pika logs it, then raised as pika does
                _pika_log.exception("protocol.data_received() failed: error=%r; %s", error,
                                    transport._sock)
                raise
            if len(data) < limit:
                return  # the receive queue is empty: the poll reports what comes next

    return consume_until_short
