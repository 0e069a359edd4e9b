"""The publish of sidecar/shell/io/pika_publish.py writes the frames pika's basic_publish
writes, byte for byte, without pika's encoders; anything it does not handle, and a pika
that is not as it was checked against, goes through basic_publish as it is."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import exceptions, frame, spec
from pika.channel import Channel
from pika.connection import Connection

from sidecar.shell.io import pika_publish
from sidecar.shell.io.pika_publish import Publisher


class Recorder:
    """pika's connection as a publish uses it: pika's own sends and counters, recording
    what reaches the transport."""

    _send_method = Connection._send_method
    _send_message = Connection._send_message
    _output_marshaled_frames = Connection._output_marshaled_frames

    def __init__(self, max_length: int):
        self._body_max_length = max_length
        self.bytes_sent = self.frames_sent = 0
        self.written: list[bytes] = []

    def _adapter_emit_data(self, data: bytes) -> None:
        self.written.append(data)

    @property
    def wire(self) -> tuple[bytes, int, int]:
        """The bytes written and pika's byte and frame counters."""
        return b"".join(self.written), self.bytes_sent, self.frames_sent


def channel(connection: Any, number: int = 1) -> Any:
    """A pika Channel, open, on ``connection``."""
    ch: Any = Channel.__new__(Channel)
    ch._state, ch.connection, ch.channel_number = Channel.OPEN, connection, number
    return ch


def frames(publish: Any, number: int, queue: str, body: bytes, message_id: str | None,
           headers: tuple[tuple[str, str], ...],
           max_length: int) -> tuple[tuple[bytes, int, int], int]:
    """What ``publish`` writes (``Recorder.wire``), and how many content headers pika
    marshalled."""
    recorder, marshalled = Recorder(max_length), []
    original = frame.Header.marshal

    def counted(header: frame.Header) -> bytes:
        marshalled.append(header)
        return original(header)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(frame.Header, "marshal", counted)
        publish(channel(recorder, number), queue, body, message_id, headers)
    return recorder.wire, len(marshalled)


PUBLISHER = Publisher("application/json", delivery_mode=2)


def short(max_bytes: int = 255) -> st.SearchStrategy[str]:
    return st.text(max_size=80).filter(lambda t: len(t.encode("utf-8", "surrogatepass"))
                                       <= max_bytes and t == t.encode(
                                           "utf-8", "ignore").decode())


@settings(max_examples=400, deadline=None)
@given(number=st.integers(1, 65535), queue=short(), body=st.binary(max_size=3000),
       message_id=st.none() | short(),
       headers=st.lists(st.tuples(short(), st.text(max_size=300).filter(
           lambda t: t == t.encode("utf-8", "ignore").decode())), max_size=4).map(tuple),
       max_length=st.sampled_from([1, 7, 100, 1000, 131064]))
def test_the_frames_are_pikas_byte_for_byte(number: int, queue: str, body: bytes,
                                            message_id: str | None,
                                            headers: tuple[tuple[str, str], ...],
                                            max_length: int) -> None:
    assert PUBLISHER.fast
    pikas = frames(PUBLISHER.through_pika, number, queue, body, message_id, headers,
                   max_length)
    ours = frames(PUBLISHER.publish, number, queue, body, message_id, headers, max_length)
    assert (pikas[1], ours[1]) == (1, 0)  # pika's encoders, then not
    assert ours[0] == pikas[0]  # the bytes, pika's byte and frame counters
    assert ours[0][2] == 2 + -(-len(body) // max_length)  # method, header, body frames


def test_the_frames_of_a_typical_publish_on_the_wire() -> None:
    """What RabbitMQ reads, written out: a check that does not go through pika."""
    (written, counted, count), _ = frames(PUBLISHER.publish, 1, "q", b"{}", "f1", (), 131064)
    assert written == (
        b"\x01\x00\x01\x00\x00\x00\x0a" + b"\x00\x3c\x00\x28" + b"\x00\x00\x00\x01q\x01\xce"
        + b"\x02\x00\x01\x00\x00\x00\x23" + b"\x00\x3c\x00\x00" + b"\x00" * 7 + b"\x02"
        + b"\x90\x80" + b"\x10application/json" + b"\x02" + b"\x02f1" + b"\xce"
        + b"\x03\x00\x01\x00\x00\x00\x02{}\xce")
    assert (counted, count) == (len(written), 3)


@pytest.mark.parametrize(("queue", "message_id", "headers", "raised"), [
    ("q" * 256, "m", (), exceptions.ShortStringTooLong),
    ("q", "é" * 128, (), exceptions.ShortStringTooLong),
    ("q", "m", (("k" * 256, "v"),), exceptions.ShortStringTooLong),
    ("q", "\ud800", (), UnicodeEncodeError),
    ("\udfff", "m", (), UnicodeEncodeError),
])
def test_what_pika_refuses_it_refuses(queue: str, message_id: str,
                                      headers: tuple[tuple[str, str], ...],
                                      raised: type[Exception]) -> None:
    recorder = Recorder(1000)
    with pytest.raises(raised):
        PUBLISHER.publish(channel(recorder), queue, b"x", message_id, headers)
    assert recorder.wire == (b"", 0, 0)


def test_values_it_does_not_write_itself_are_left_to_pika() -> None:
    odd: Any = (("n", 7), ("b", b"raw"))  # not str: pika writes them as its table types
    pikas = frames(PUBLISHER.through_pika, 3, "q", b"x", "m", odd, 1000)
    ours = frames(PUBLISHER.publish, 3, "q", b"x", "m", odd, 1000)
    assert ours == pikas and ours[1] == 1
    text: Any = "body as text"
    assert frames(PUBLISHER.publish, 3, "q", text, "m", (), 1000) == frames(
        PUBLISHER.through_pika, 3, "q", text, "m", (), 1000)


def test_a_channel_not_open_raises_as_pika_does() -> None:
    recorder = Recorder(1000)
    ch = channel(recorder)
    ch._state = Channel.CLOSING
    with pytest.raises(exceptions.ChannelWrongStateError):
        PUBLISHER.publish(ch, "q", b"x", "m", ())
    assert recorder.wire == (b"", 0, 0)


def test_a_connection_with_sends_of_its_own_gets_them() -> None:
    class Overriding(Recorder):
        def _send_method(self, *args: Any) -> None:  # type: ignore[override]
            self.written.append(b"its own")

    recorder = Overriding(1000)
    PUBLISHER.publish(channel(recorder), "q", b"x", "m", ())
    assert recorder.written == [b"its own"]


def test_not_a_pika_channel_gets_basic_publish_with_the_properties() -> None:
    calls = []

    class Fake:
        def basic_publish(self, exchange: str, queue: str, body: bytes,
                          props: spec.BasicProperties, mandatory: bool) -> None:
            calls.append((exchange, queue, body, props.content_type, props.delivery_mode,
                          props.message_id, props.headers, mandatory))

    PUBLISHER.publish(Fake(), "q", b"x", "m", (("a", "1"), ("a", "2")))
    PUBLISHER.publish(Fake(), "q", b"y", None, ())
    assert calls == [("", "q", b"x", "application/json", 2, "m", {"a": "2"}, True),
                     ("", "q", b"y", "application/json", 2, None, None, True)]


def test_the_method_frames_kept_are_bounded() -> None:
    publisher = Publisher("application/json", delivery_mode=2)
    for i in range(pika_publish._METHODS_KEPT + 5):
        frames(publisher.publish, 1, f"q{i}", b"", None, (), 1000)
    assert 0 < len(publisher._methods) <= pika_publish._METHODS_KEPT


def test_a_pika_that_writes_other_frames_is_used_as_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def other(self: Any) -> list[bytes]:
        return [b"\x00\x00", b"other encoding"]

    monkeypatch.setattr(spec.BasicProperties, "encode", other)
    publisher = Publisher("application/json", delivery_mode=2)
    assert not publisher.fast
    recorder = Recorder(1000)
    publisher.publish(channel(recorder), "q", b"x", "m", ())
    assert b"other encoding" in recorder.written[1]


def test_a_pika_without_what_it_uses_is_used_as_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Connection, "_send_message")
    assert not Publisher("application/json", delivery_mode=2).fast


def test_a_body_of_one_frame_is_one_write_and_a_larger_one_a_write_per_frame() -> None:
    small, large = Recorder(1000), Recorder(1000)
    PUBLISHER.publish(channel(small), "q", b"x" * 1000, "m", ())
    PUBLISHER.publish(channel(large), "q", b"y" * 2500, "m", ())
    assert len(small.written) == 1 and small.frames_sent == 3
    assert [len(w) for w in large.written[1:]] == [1008, 1008, 508]  # not copied once more
    assert large.frames_sent == 5
