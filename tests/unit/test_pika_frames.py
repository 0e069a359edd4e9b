"""The confirm frames sidecar/shell/io/pika_frames.py handles itself end exactly as pika's
own ``_on_data_available`` ends them: the same callbacks with the same frames, counters
and buffer, the same errors; everything else is pika's, and so is all of it for a pika or
a connection that is not as it was checked against."""

from __future__ import annotations

import logging
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec
from pika.callback import CallbackManager
from pika.connection import Connection

from sidecar.shell.io import pika_frames

PIKAS: Any = getattr(Connection._on_data_available, "original",
                     Connection._on_data_available)  # pika's own, installed or not
OURS = pika_frames._replacement(PIKAS)


class StandIn:
    """pika's frame handling on a connection whose channels record what reaches them."""

    _read_frame = Connection._read_frame
    _trim_frame_buffer = Connection._trim_frame_buffer
    _process_frame = Connection._process_frame
    _process_callbacks = Connection._process_callbacks
    _is_method_frame = Connection._is_method_frame
    _has_pending_callbacks = Connection._has_pending_callbacks

    def __init__(self, one_shot: bool = False) -> None:
        self._frame_buffer, self.bytes_received, self.frames_received = b"", 0, 0
        self._heartbeat_checker: Any = None
        self.callbacks = CallbackManager()
        self.seen: list[Any] = []
        for channel in (1, 2):
            for method in (spec.Basic.Ack, spec.Basic.Nack):
                self.callbacks.add(channel, method, self.confirmed, one_shot)
                self.callbacks.add(channel, method, self.also, one_shot)
        self.callbacks.add(1, spec.Basic.CancelOk, self.also, one_shot)  # an RPC's reply
        self.callbacks.add(0, spec.Channel.Close, self.also)

    def confirmed(self, value: Any) -> None:
        self.seen.append(("confirmed", described(value)))

    def also(self, value: Any) -> None:
        self.seen.append(("also", described(value)))

    def _deliver_frame_to_channel(self, value: Any) -> None:
        self.seen.append(("channel", described(value)))

    @property
    def state(self) -> Any:
        return self.seen, self._frame_buffer, self.bytes_received, self.frames_received


def described(value: Any) -> Any:
    method = getattr(value, "method", None)
    return (type(value), value.channel_number, type(method),
            sorted(vars(method).items()) if method is not None else vars(value))


def handled(on_data_available: Any, reads: list[bytes], **kwargs: Any) -> Any:
    """The stand-in's state after ``reads``, and the error that ended them, if any."""
    conn = StandIn(**kwargs)
    try:
        for data in reads:
            on_data_available(conn, data)
    except Exception as error:
        return conn.state, repr(error)
    return conn.state, None


def confirm(kind: Any, channel: int, tag: int, bits: int, size: int = 13,
            end: int = 0xCE) -> bytes:
    return struct.pack(">BHIIQB", 1, channel, size, kind.INDEX, tag, bits) + bytes((end,))


FRAMES = st.one_of(
    st.builds(confirm, st.sampled_from([spec.Basic.Ack, spec.Basic.Nack]),
              st.sampled_from([0, 1, 2, 3, 65535]), st.integers(0, 2 ** 64 - 1),
              st.integers(0, 255)),
    st.builds(confirm, st.sampled_from([spec.Basic.Ack, spec.Basic.Nack, spec.Basic.Reject]),
              st.integers(0, 3), st.integers(0, 2 ** 64 - 1), st.integers(0, 255),
              st.sampled_from([12, 13, 14, 2 ** 31]), st.sampled_from([0xCE, 0, 0xCF])),
    st.builds(lambda m, c: frame.Method(c, m).marshal(),
              st.sampled_from([spec.Basic.Ack(5, True), spec.Basic.Reject(3),
                               spec.Basic.Nack(2, True, False), spec.Basic.Cancel("t")]),
              st.integers(0, 3)),
    st.builds(lambda m, c: frame.Method(c, m).marshal(),
              st.sampled_from([spec.Basic.Deliver("ctag", 9, True, "", "q"),
                               spec.Basic.CancelOk("t"), spec.Basic.Return(312, "x", "", "q"),
                               spec.Channel.Close(406, "no", 0, 0)]),
              st.integers(0, 3)),
    st.builds(lambda c, n, body: frame.Header(c, n, spec.BasicProperties(
        content_type="application/json", delivery_mode=2, message_id="m")).marshal()
        + frame.Body(c, body).marshal(), st.integers(0, 3), st.integers(0, 9),
        st.binary(max_size=9)),
    st.just(frame.Heartbeat().marshal()),
    st.just(b"AMQP\x00\x00\x09\x01"),
    st.binary(max_size=30),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(FRAMES, max_size=8), st.lists(st.integers(0, 200), max_size=6),
       st.booleans())
def test_any_stream_ends_as_with_pika(frames: list[bytes], cuts: list[int],
                                      one_shot: bool) -> None:
    stream = b"".join(frames)
    points = sorted({min(cut, len(stream)) for cut in cuts})
    reads = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert handled(OURS, reads, one_shot=one_shot) == handled(PIKAS, reads,
                                                              one_shot=one_shot)


def test_confirms_on_the_wire_reach_the_callbacks() -> None:
    """A check that does not go through pika's decoding: bytes as RabbitMQ writes them."""
    wire = (b"\x01\x00\x02\x00\x00\x00\x0d\x00\x3c\x00\x50" + b"\x00" * 7 + b"\x2a\x01\xce"
            + b"\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x78" + b"\x00" * 7 + b"\x07\x02\xce")
    (seen, left, received, count), error = handled(OURS, [wire[:30], wire[30:]])
    assert error is None and (left, received, count) == (b"", 42, 2)
    assert [(who, d[1], d[2], dict(d[3])) for who, d in seen] == [
        ("confirmed", 2, spec.Basic.Ack, {"delivery_tag": 42, "multiple": True}),
        ("also", 2, spec.Basic.Ack, {"delivery_tag": 42, "multiple": True}),
        ("confirmed", 1, spec.Basic.Nack, {"delivery_tag": 7, "multiple": False,
                                           "requeue": True}),
        ("also", 1, spec.Basic.Nack, {"delivery_tag": 7, "multiple": False,
                                      "requeue": True})]


def test_the_usual_case_does_not_go_through_the_callback_manager(
        monkeypatch: pytest.MonkeyPatch) -> None:
    processed: list[Any] = []
    original = CallbackManager.process
    monkeypatch.setattr(CallbackManager, "process",
                        lambda *args: processed.append(args) or original(*args))
    replacement = pika_frames._replacement(PIKAS)  # made with the spy in place
    wire = confirm(spec.Basic.Ack, 1, 3, 0)
    assert handled(replacement, [wire]) == handled(PIKAS, [wire])
    assert len(processed) == 1  # pika's own run only


@pytest.mark.parametrize("debug", [False, True])
def test_pikas_debug_records_are_written_by_pika(caplog: pytest.LogCaptureFixture,
                                                 debug: bool) -> None:
    caplog.set_level(logging.DEBUG if debug else logging.INFO, logger="pika.callback")
    handled(OURS, [confirm(spec.Basic.Ack, 1, 3, 0)])
    assert bool([r for r in caplog.records if r.name == "pika.callback"]) is debug


def test_a_callback_that_raises_is_logged_and_raised_as_pika_does(
        caplog: pytest.LogCaptureFixture) -> None:
    class Failing(StandIn):
        def confirmed(self, value: Any) -> None:
            raise ValueError("no")

    logged = []
    for on_data_available in (PIKAS, OURS):
        conn, data = Failing(), confirm(spec.Basic.Ack, 1, 3, 0) * 2
        caplog.clear()
        with pytest.raises(ValueError, match="no"):
            on_data_available(conn, data)
        logged.append(([(r.name, r.levelno, r.getMessage().split(" at 0x")[0])
                        for r in caplog.records], conn._frame_buffer, conn.frames_received))
    assert logged[0] == logged[1] and logged[0][0] and logged[0][2] == 1


def test_a_connection_with_frame_handling_of_its_own_gets_pikas() -> None:
    class Own(StandIn):
        def _process_frame(self, value: Any) -> None:
            self.seen.append("its own")

    conn = Own()
    OURS(conn, confirm(spec.Basic.Ack, 1, 3, 0))
    assert conn.seen == ["its own"]


def test_a_pika_that_decodes_otherwise_is_left_as_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    decode = frame.decode_frame

    def other(data: bytes) -> Any:  # pika reading the delivery tag otherwise
        consumed, value = decode(data)
        if isinstance(getattr(value, "method", None), spec.Basic.Ack):
            value.method.delivery_tag += 1
        return consumed, value

    monkeypatch.setattr(frame, "decode_frame", other)
    assert not pika_frames._check(PIKAS)
    assert pika_frames._check(lambda conn, data: None) is False


def test_it_checks_out_and_is_installed_once() -> None:
    assert pika_frames._check(PIKAS)
    assert pika_frames.install() and pika_frames.install()
    assert Connection._on_data_available.original is PIKAS  # type: ignore[attr-defined]
