"""The frames the broker sends handled as pika handles them, with less work: its
publisher confirms, and the pass of every other frame to its channel.

Every Basic.Ack or Basic.Nack the broker sends on the publishing channel (about one per
three publishes, often ``multiple``) goes through pika's ``Connection._on_data_available``:
``frame.decode_frame`` (a slice of the frame, a method object, a frame object), then
``_process_frame``, ``_process_callbacks`` and the ``CallbackManager``, whose
``pending`` and ``process`` pass the channel number and the method through decorators
that turn them into names (``name_or_value``: an ``issubclass``, ``isinstance`` tests and
a ``str``, six times a frame) before the callback list is looked up twice, copied and
filtered: about 75 k instructions a confirm, the callback itself a tenth of that.

Here a replacement ``_on_data_available`` takes pika's frame buffer as pika does, frame by
frame. A frame at its head that is a complete Basic.Ack or Basic.Nack method frame of the
usual size (13 bytes of payload, the frame end in place) on a channel whose callbacks for
that method are all as ``confirm_delivery`` registers them (not one-shot, no caller or
arguments to match) is decoded by pika's own method class, the buffer trimmed by pika's
``_trim_frame_buffer`` (its byte counter), pika's frame counter counted, and the callbacks
called in their order with pika's ``frame.Method``; an exception is logged as pika's
``CallbackManager`` logs it and raised. Every other frame (deliveries, replies, heartbeats,
a partial or malformed frame, a confirm without such callbacks) is decoded by pika's own
``_read_frame`` and trimmed by its ``_trim_frame_buffer``, one at a time and in order, as
before. pika's ``_process_frame`` then asks the ``CallbackManager`` whether a callback
waits for the frame (the same decorators, two names made) before it passes the frame to
its channel: for the three frames of every delivery, the method (Basic.Deliver) one, that
costs more than the pass itself. Here a content header or body frame, or a method frame
for which the manager holds no callbacks under pika's names (the channel number as a
string, the method's ``NAME``), on a channel other than 0, counts in pika's frame counter
and goes to pika's ``_deliver_frame_to_channel`` as in ``_process_frame``; every other
frame to ``_process_frame`` itself. All of it is pika's own handling while pika's callback
logger would write DEBUG records, and on a connection class that overrides any of the
methods named below.

This is pika's private API (``Connection._on_data_available``, ``_frame_buffer``,
``_read_frame``, ``_trim_frame_buffer``, ``_process_frame``, ``_process_callbacks``,
``_is_method_frame``, ``_has_pending_callbacks``, ``_deliver_frame_to_channel``,
``frames_received``, ``callbacks``; ``CallbackManager._stack`` and its key names; pika
1.x), contained here: ``install`` runs pika's own ``_on_data_available`` and the
replacement on a stand-in connection over a stream of sample frames (confirms with every
flag bit, ones left to pika, a frame split across reads, a delivery), compares what its
channels and callbacks got, the counters and the buffer, and replaces nothing if one
differs or anything it uses is missing.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from pika import callback, frame, spec
from pika.callback import CallbackManager
from pika.connection import Connection

log = logging.getLogger("sidecar.amqp")
_HEAD = struct.Struct(">BHII")  # frame type, channel, size; the method's index
_SIZE, _END = 21, 0xCE  # a confirm frame: header 7, payload 13, frame end 1
_CONFIRMS: dict[int, Any] = {method.INDEX: method for method in (spec.Basic.Ack, spec.Basic.Nack)}
_PIKAS = ("_read_frame", "_trim_frame_buffer", "_process_frame", "_process_callbacks",
          "_is_method_frame", "_has_pending_callbacks")
_MANAGERS = ("process", "pending")
_installed: list[bool] = []  # [whether the replacement is in place], once decided


def install() -> bool:
    """Replace pika's ``Connection._on_data_available`` (once per process); False when
    pika is not as it was checked against, and nothing was replaced."""
    if not _installed:
        original: Any = getattr(Connection, "_on_data_available", None)
        ok = callable(original) and not hasattr(original, "original") and _check(original)
        if ok:
            pikas: Any = Connection  # its stubs leave the name out
            pikas._on_data_available = _replacement(original)
        else:
            log.debug("pika's frame handling is not as expected: confirms go through it")
        _installed.append(ok)
    return _installed[0]


def _replacement(original: Callable[[Any, bytes], None]) -> Callable[[Any, bytes], None]:
    expected = {name: getattr(Connection, name) for name in _PIKAS}
    managers = {name: getattr(CallbackManager, name) for name in _MANAGERS}
    classes: dict[type, bool] = {}  # connection class -> pika's own frame handling

    def pikas(cls: type) -> bool:
        known = classes.get(cls)
        if known is None:
            known = classes[cls] = all(getattr(cls, name, None) is method
                                       for name, method in expected.items())
        return known

    def on_data_available(conn: Any, data_in: bytes) -> None:
        manager = getattr(conn, "callbacks", None)
        if (not pikas(type(conn)) or type(manager) is not CallbackManager
                or any(getattr(CallbackManager, name) is not method
                       for name, method in managers.items())
                or callback.LOGGER.isEnabledFor(logging.DEBUG)):
            original(conn, data_in)
            return
        conn._frame_buffer += data_in
        while conn._frame_buffer:  # pika's loop, a confirm at the head handled here
            if _confirm(conn, manager):
                continue
            consumed_count, frame_value = conn._read_frame()
            if not frame_value:
                return
            conn._trim_frame_buffer(consumed_count)
            _process(conn, manager, frame_value)

    on_data_available.original = original  # type: ignore[attr-defined]
    return on_data_available


def _confirm(conn: Any, manager: Any) -> bool:
    """Handle the confirm frame at the head of the buffer as pika would; False, changing
    nothing, when there is none or it is anything but the usual case."""
    buffer = conn._frame_buffer
    if type(buffer) is not bytes or len(buffer) < _SIZE or buffer[_SIZE - 1] != _END:
        return False
    kind, channel, size, index = _HEAD.unpack_from(buffer)
    method_class = _CONFIRMS.get(index)
    if kind != spec.FRAME_METHOD or size != _SIZE - 8 or method_class is None:
        return False
    prefix, key = str(channel), method_class.NAME  # pika's names for them
    entries = manager._stack.get(prefix, {}).get(key)
    if not entries or not all(_plain(entry) for entry in entries):
        return False
    value = frame.Method(channel, method_class().decode(buffer, 11))
    conn._trim_frame_buffer(_SIZE)
    conn.frames_received += 1
    for call in [entry[CallbackManager.CALLBACK] for entry in entries]:
        try:
            call(value)
        except Exception:  # as pika's CallbackManager.process logs it
            callback.LOGGER.exception('Calling %s for "%s:%s" failed', call, prefix, key)
            raise
    return True


def _process(conn: Any, manager: Any, value: Any) -> None:
    """pika's ``_process_frame`` for a frame pika decoded: a content frame, or a method
    frame no callback waits for, goes to its channel (after pika's frame counter) as
    there; anything else to ``_process_frame`` itself."""
    kind = type(value)
    if kind is frame.Method:
        waiting = manager._stack.get(str(value.channel_number))  # pika's names for them
        if waiting and value.method.NAME in waiting:
            conn._process_frame(value)
            return
    elif kind is not frame.Header and kind is not frame.Body:
        conn._process_frame(value)
        return
    if value.channel_number > 0:
        conn.frames_received += 1
        conn._deliver_frame_to_channel(value)
    else:
        conn._process_frame(value)


def _plain(entry: Any) -> bool:
    """Registered as ``confirm_delivery`` does: every call, for any caller and frame."""
    return (type(entry) is dict and entry.get(CallbackManager.ONE_SHOT) is False
            and entry.get(CallbackManager.ONLY_CALLER) is None
            and entry.get(CallbackManager.ARGUMENTS) is None)


def _check(original: Callable[[Any, bytes], None]) -> bool:
    """Whether the replacement does what pika's own ``original`` does (see above)."""
    reads = [confirm(spec.Basic.Ack(7, False), 2) + confirm(spec.Basic.Nack(9, True, False), 2)
             + confirm(spec.Basic.Ack(2 ** 64 - 1, True), 3) + confirm(spec.Basic.Ack(1), 0),
             confirm(spec.Basic.Nack(10, False, True), 2)[:15],
             confirm(spec.Basic.Nack(10, False, True), 2)[15:]
             + confirm(spec.Basic.Reject(11), 2)
             + bytes((1, 0, 2, 0, 0, 0, 13)) + struct.pack(">IQB", spec.Basic.Ack.INDEX,
                                                               5, 0xFF) + b"\xce"
             + confirm(spec.Basic.Deliver("c", 4, True, "", "q"), 2)
             + frame.Header(2, 1, spec.BasicProperties(message_id="m")).marshal()
             + frame.Body(2, b"x").marshal()]
    try:
        replacement = _replacement(original)
        seen = [_run(method, reads) for method in (original, replacement)]
    except Exception as error:  # anything missing or changed: pika's path throughout
        log.debug("pika's frame handling is not as expected (%r)", error)
        return False
    return seen[0] == seen[1] and len(seen[0][0]) == 9


def confirm(method: Any, channel: int) -> bytes:
    """A method frame as pika marshals it."""
    return frame.Method(channel, method).marshal()


def _run(on_data_available: Callable[[Any, bytes], None],
         reads: list[bytes]) -> tuple[list[Any], Any]:
    """What a stand-in connection's confirm callbacks (channels 2 and 3) and frame
    handling saw of ``reads``: their arguments, the counters and the buffer left."""
    calls: list[Any] = []
    methods: dict[str, Any] = {name: getattr(Connection, name) for name in _PIKAS}
    methods["_deliver_frame_to_channel"] = lambda _c, value: calls.append(
        ("channel", _seen(value)))
    conn: Any = type("StandIn", (), methods)()
    conn._frame_buffer, conn.bytes_received, conn.frames_received = b"", 0, 0
    conn._heartbeat_checker, conn.callbacks = None, CallbackManager()
    for channel in (2, 3):
        for method in (spec.Basic.Ack, spec.Basic.Nack):
            conn.callbacks.add(channel, method, lambda value: calls.append(_seen(value)), False)
    for data in reads:
        on_data_available(conn, data)
    return calls, (conn._frame_buffer, conn.bytes_received, conn.frames_received)


def _seen(value: Any) -> Any:
    method = getattr(value, "method", None)
    return (type(value), getattr(value, "channel_number", None), type(method),
            sorted(vars(method).items()) if method is not None else None)
