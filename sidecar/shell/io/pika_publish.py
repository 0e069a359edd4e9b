"""A publish that writes the bytes pika's ``Channel.basic_publish`` writes, with less work.

pika's ``basic_publish`` builds a ``Basic.Publish`` method object, then (in the
connection's ``_send_method`` and ``_send_message``) a frame object for the method, one
for the content header and one per body frame, marshals each through generic encoders
(``encode_short_string``, the properties' ``encode`` testing all 14 properties, a
``struct.pack`` per field, a join per frame) and hands them to ``_output_marshaled_frames``,
which writes them to the transport one by one: about 10 µs a publish, two publishes a 1→1
fragment. Here the method frame, the same for every message to a queue on a channel, is
marshalled once by pika itself and kept; the content header is written from the few
properties the sidecar sets (a fixed content type and delivery mode, the message id and
the headers per message) with the AMQP 0-9-1 wire constants; the body is split at the
connection's ``_body_max_length`` into body frames as pika splits it. The frames go to
pika's own ``_output_marshaled_frames`` (its byte counter, which its heartbeat checker
reads, its transport and its errors as before) joined into one piece when the body takes
one frame at most, one transport write instead of three, and its frame counter is then made
up to the frames in that piece.

What ``basic_publish`` checks before sending is checked the same way: the channel must be
open (its ``_state``), the body ``bytes``; pika's connection has no check of its own for a
content frame (blocked connections only start a timer, publisher-confirm sequence numbers
are counted by the caller, sidecar/shell/io/amqp.py). Anything else goes to pika's
``basic_publish`` as it is, which publishes or raises as it always did: a channel or a
connection that is not pika's own class (or whose class overrides ``_send_method`` or
``_send_message``), a channel not open, a queue name, message id or header name longer
than a short string, a string UTF-8 cannot encode, a header value that is not a string.

This is pika's private API (``Channel._state``, ``Channel.connection``,
``Connection._send_method``, ``_send_message``, ``_body_max_length``,
``_output_marshaled_frames``, ``frames_sent``; pika 1.x), contained here: at start-up
``Publisher`` runs pika's own ``basic_publish`` against a stand-in connection that records
the frames ``_send_message`` hands to ``_output_marshaled_frames``, compares them with its
own for a few messages (with and without headers and message id, non-ASCII text, an empty
body and one split into several frames), and publishes through ``basic_publish`` only if
one differs or anything it uses is missing.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Literal

from pika import frame, spec
from pika.channel import Channel
from pika.connection import Connection

log = logging.getLogger("sidecar.amqp")
Headers = tuple[tuple[str, str], ...]

# AMQP 0-9-1 wire constants (frame types and end, class Basic, its property flags)
_HEADER, _BODY, _END = 2, 3, b"\xce"
_BASIC = 60
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _MESSAGE_ID = 1 << 15, 1 << 13, 1 << 12, 1 << 7
_HEADER_FRAME = struct.Struct(">BHIHxxQH")  # type, channel, size; class, weight, size, flags
_FRAME = struct.Struct(">BHI")  # type, channel, size
_LONG_STRING = struct.Struct(">cI")
_TABLE_SIZE = struct.Struct(">I")
_METHODS_KEPT = 256  # method frames cached at most (a run publishes to a few queues)
_PIKAS = ("_send_method", "_send_message")  # the connection's, as the check ran them


class Publisher:
    """``publish(channel, queue, body, message_id, headers)`` to the default exchange with a
    fixed content type, delivery mode and mandatory flag; through pika's ``basic_publish``
    when ``fast`` is False (the start-up check failed) or for anything unusual."""

    def __init__(self, content_type: str, delivery_mode: Literal[1, 2],
                 mandatory: bool = True):
        self.mandatory = mandatory
        # One properties object for pika's path, refilled: basic_publish encodes it at once.
        self.props = spec.BasicProperties(content_type=content_type,
                                          delivery_mode=delivery_mode)
        fixed = _short_string(content_type)
        self._content_type = fixed or b""
        self._delivery_mode = bytes((delivery_mode,))
        self._methods: dict[tuple[int, str], bytes] = {}
        self._connections: dict[type, bool] = {}  # connection class -> pika's own sends
        self.fast = fixed is not None and self._check()

    def publish(self, ch: Any, queue: str, body: bytes, message_id: str | None,
                headers: Headers) -> None:
        pikas_channel = type(ch) is Channel  # not narrowed: ch stays Any for the private names
        if self.fast and pikas_channel and ch._state == Channel.OPEN:
            conn = ch.connection
            frames = (self._frames(ch.channel_number, queue, body, message_id, headers,
                                   conn._body_max_length)
                      if self._pikas_connection(type(conn)) else None)
            if frames is not None:  # pika's counters and transport
                pieces, count = frames
                conn._output_marshaled_frames(pieces)
                conn.frames_sent += count - len(pieces)  # as if written one by one
                return
        self.through_pika(ch, queue, body, message_id, headers)

    def through_pika(self, ch: Any, queue: str, body: bytes, message_id: str | None,
                     headers: Headers) -> None:
        props = self.props
        props.message_id = message_id
        props.headers = dict(headers) if headers else None
        ch.basic_publish("", queue, body, props, mandatory=self.mandatory)

    def _pikas_connection(self, cls: type) -> bool:
        """Whether ``cls`` publishes with the ``Connection`` methods the check ran."""
        known = self._connections.get(cls)
        if known is None:
            known = self._connections[cls] = all(
                getattr(cls, name, None) is getattr(Connection, name) for name in _PIKAS)
        return known

    def _frames(self, channel: int, queue: str, body: bytes, message_id: str | None,
                headers: Headers, max_length: Any) -> tuple[list[bytes], int] | None:
        """The frames pika would marshal, and how many: in one piece when the body takes
        one frame at most (one transport write); each body frame apart when it takes more,
        so that a large body is not copied once more, nor left to partial sends as a
        whole. None for pika to decide."""
        if type(body) is not bytes or type(max_length) is not int or max_length < 1:
            return None
        try:
            method = self._methods.get((channel, queue)) or self._method(channel, queue)
            props = self._properties(message_id, headers)
        except UnicodeError:
            return None
        if method is None or props is None:
            return None
        flags, encoded = props
        length = len(body)
        head = [method, _HEADER_FRAME.pack(_HEADER, channel, len(encoded) + 14, _BASIC, length,
                                           flags), encoded, _END]
        if length <= max_length:
            if length:
                head += (_FRAME.pack(_BODY, channel, length), body, _END)
            return [b"".join(head)], 3 if length else 2
        pieces = [b"".join(head)]
        for start in range(0, length, max_length):
            chunk = body[start:start + max_length]
            pieces.append(b"".join((_FRAME.pack(_BODY, channel, len(chunk)), chunk, _END)))
        return pieces, 1 + len(pieces)

    def _method(self, channel: int, queue: str) -> bytes | None:
        if type(queue) is not str or _short_string(queue) is None:
            return None
        if len(self._methods) >= _METHODS_KEPT:
            self._methods.clear()
        marshalled = self._methods[(channel, queue)] = frame.Method(channel, spec.Basic.Publish(
            exchange="", routing_key=queue, mandatory=self.mandatory)).marshal()
        return marshalled

    def _properties(self, message_id: str | None,
                    headers: Headers) -> tuple[int, bytes] | None:
        """(flags, the encoded properties) or None; pika encodes them in flag order."""
        flags, pieces = _CONTENT_TYPE | _DELIVERY_MODE, [self._content_type]
        if headers:
            table = _table(headers)
            if table is None:
                return None
            flags |= _HEADERS
            pieces.append(table)
        pieces.append(self._delivery_mode)
        if message_id is not None:
            short = _short_string(message_id)
            if short is None:
                return None
            flags |= _MESSAGE_ID
            pieces.append(short)
        return flags, b"".join(pieces)

    def _check(self) -> bool:
        """Whether pika's own basic_publish writes what ``_frames`` writes (see above)."""
        samples: list[tuple[int, str, bytes, str | None, Headers]] = [
            (1, "out", b'{"a":1}', "f-1", ()),
            (2, "lineage", b"", None, (("x-error", "déjà vu ✓"), ("k", ""), ("x-error", "2"))),
            (65535, "ünïcode-queue", bytes(range(256)) * 3, "", (("", "v"),)),
        ]
        try:
            for channel, queue, body, message_id, headers in samples:
                recorded = _recorder(100)
                pikas: Any = Channel.__new__(Channel)
                pikas._state, pikas.connection = Channel.OPEN, recorded
                pikas.channel_number = channel
                self.through_pika(pikas, queue, body, message_id, headers)
                ours = self._frames(channel, queue, body, message_id, headers, 100)
                if ours is None or (b"".join(ours[0]), ours[1]) != (
                        b"".join(recorded.frames), len(recorded.frames)):
                    log.debug("pika's publish frames are not as expected: "
                              "publishing through basic_publish")
                    return False
        except Exception as error:  # anything missing or changed: pika's path throughout
            log.debug("pika's publish is not as expected (%r): publishing through "
                      "basic_publish", error)
            return False
        return True


def _recorder(max_length: int) -> Any:
    """pika's connection as ``basic_publish`` uses it (its own ``_send_method`` and
    ``_send_message``), recording the frames handed to ``_output_marshaled_frames``."""
    frames: list[bytes] = []
    cls = type("Recorder", (), {name: getattr(Connection, name) for name in _PIKAS})
    recorder = cls()
    recorder._body_max_length, recorder.frames = max_length, frames
    recorder._output_marshaled_frames = frames.extend
    return recorder


def _short_string(text: str) -> bytes | None:
    """AMQP's short string (length octet, UTF-8), None past 255 bytes or for a non-str."""
    if type(text) is not str:
        return None
    encoded = text.encode()
    return bytes((len(encoded),)) + encoded if len(encoded) < 256 else None


def _table(headers: Headers) -> bytes | None:
    """The field table of ``dict(headers)`` with long-string values, as pika writes it."""
    pieces = [b""]
    for key, value in dict(headers).items():
        name = _short_string(key)
        if name is None or type(value) is not str:
            return None
        encoded = value.encode()
        pieces += (name, _LONG_STRING.pack(b"S", len(encoded)), encoded)
    table = b"".join(pieces)
    return _TABLE_SIZE.pack(len(table)) + table

