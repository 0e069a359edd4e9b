"""One send(2) for all the AMQP frames pika has buffered, not one per frame.

pika's transports buffer each frame the connection emits (a publish is three: method,
header and body; an ack one) and, once the socket is writable, send the buffer one chunk
at a time: a system call and a pass through pika's send wrappers per frame, seven for a
1→1 fragment. Joining the buffered chunks just before pika's own ``_produce`` sends them
makes it one send per writable event. pika still does the send, the partial-send
bookkeeping, TLS and the errors exactly as before; only the chunks are fewer. Past
``JOIN_LIMIT`` bytes buffered (a broker that does not keep up) nothing is joined, so a
partial send never copies a large remainder.

This is pika's private API (``_AsyncTransportBase._produce``, ``_tx_buffers``,
``_tx_buffered_byte_count``, pika 1.x), contained here: ``install`` checks at start-up that
they are there and installs nothing otherwise, and the wrapper leaves a transport without
them to pika as it is. pika then sends frame by frame, as it always did.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sidecar.amqp")
JOIN_LIMIT = 256 * 1024  # bytes buffered at most to join into one send
_installed: list[bool] = []  # [whether the wrapper is in place], once decided


def install() -> bool:
    """Wrap pika's transport ``_produce`` (once per process); False when pika is not as
    expected, and nothing was changed."""
    if not _installed:
        _installed.append(_wrap())
    return _installed[0]


def _wrap() -> bool:
    try:
        from pika.adapters.utils.io_services_utils import _AsyncTransportBase
    except ImportError:
        log.debug("pika's transport is not where expected: frames are sent one by one")
        return False
    produce = _AsyncTransportBase.__dict__.get("_produce")
    if not callable(produce) or getattr(produce, "joins_frames", False):
        log.debug("pika's transport has no _produce: frames are sent one by one")
        return False
    setattr(_AsyncTransportBase, "_produce", _joining(produce))  # noqa: B010
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

    joined_produce.joins_frames = True  # type: ignore[attr-defined]
    return joined_produce
