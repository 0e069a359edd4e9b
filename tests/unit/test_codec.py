"""The journal's JSON form of events and effects: exact round trips, readable bytes."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import Transition, codec
from sidecar.core import effects as fx
from sidecar.core import events as ev

SCALARS: dict[typing.Any, st.SearchStrategy] = {
    str: st.text(max_size=20),
    int: st.integers(-(2**40), 2**40),
    float: st.floats(allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
    bytes: st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode)),
}


def _strategy(hint: typing.Any) -> st.SearchStrategy:
    if hint in SCALARS:
        return SCALARS[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_strategy(args[0]), max_size=3).map(tuple)
    if origin is tuple:
        return st.tuples(*(_strategy(a) for a in args))
    if type(None) in args:  # X | None
        return st.one_of(st.none(), *(_strategy(a) for a in args if a is not type(None)))
    raise AssertionError(f"no strategy for {hint!r}: extend the test with the new field type")


def instances(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _strategy(hints[f.name]) for f in dataclasses.fields(cls)})


ALL = sorted({**codec.EVENTS, **codec.EFFECTS}.values(), key=lambda c: c.__name__)


def test_every_event_and_effect_class_is_known_to_the_codec() -> None:
    assert set(codec.EVENTS) >= {"Delivered", "FrameReceived", "Tick", "ShutdownRequested",
                                 "PublishConfirmed", "FileDownloaded", "UploadFailed"}
    assert set(codec.EFFECTS) >= {"Ack", "Publish", "SendFrame", "DeleteFiles", "Exit"}
    for cls in ALL:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@given(data=st.data())
def test_encode_then_json_then_decode_gives_the_same_object(cls: type,
                                                           data: st.DataObject) -> None:
    obj = data.draw(instances(cls))
    text = json.dumps(codec.encode(obj))
    assert codec.decode(json.loads(text)) == obj


def test_utf8_bytes_are_written_as_text_and_other_bytes_as_base64() -> None:
    frame = ev.FrameReceived(2, b'{"fragment_id": "\xc3\xa9t\xc3\xa9"}')
    encoded = codec.encode(frame)
    assert encoded == {"kind": "FrameReceived", "conn": 2,
                       "payload": '{"fragment_id": "été"}'}
    binary = ev.FrameReceived(2, b"\xff\x00garbage")
    assert codec.encode(binary)["payload"] == {"base64": "/wBnYXJiYWdl"}
    assert codec.decode(json.loads(json.dumps(codec.encode(binary)))) == binary


def test_long_effect_bytes_are_recorded_as_a_digest_short_ones_as_text() -> None:
    body = b'{"files":[],"metadata":{"fragment_id":"' + b"a" * 64 + b'"}}'
    publish = fx.Publish(3, "h-out", body, "a" * 64, (("x-a", "b"),))
    recorded = codec.encode_effect(publish)
    assert recorded["body"] == codec.digest(body)
    assert recorded["body"]["len"] == len(body) and len(recorded["body"]["sha256"]) == 16
    kill = fx.SendFrame(1, b'{"status":"complete"}')
    assert codec.encode_effect(kill)["payload"] == '{"status":"complete"}'
    # what replay compares: the recorded form read back equals a fresh encoding
    assert json.loads(json.dumps(recorded)) == recorded
    deleted = codec.encode_effect(fx.DeleteFiles(("/v/a", "/v/b"), ("/v",)))
    assert json.loads(json.dumps(deleted)) == deleted
    other = fx.Publish(3, "h-out", body.replace(b"a", b"b"), "a" * 64, (("x-a", "b"),))
    assert codec.encode_effect(other) != recorded


def test_transitions_name_their_fragment_by_a_prefix() -> None:
    t = Transition("input", 7, "f" * 64, "ack", "published", "acked")
    assert codec.encode_transition(t) == ["input", 7, "f" * 12, "ack", "published", "acked"]


@pytest.mark.parametrize("bad", [{"kind": "Nope"}, {}, {"kind": "Ack", "tag": 1, "x": 2},
                                 {"kind": "Delivered", "tag": 1, "body": 5}])
def test_decode_refuses_what_is_not_an_event_or_effect(bad: dict) -> None:
    with pytest.raises(codec.CodecError):
        codec.decode(bad)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@given(data=st.data())
def test_the_compiled_encoders_give_what_the_field_by_field_definition_gives(
        cls: type, data: st.DataObject) -> None:
    obj = data.draw(instances(cls))
    expected = codec._encode_slowly(obj)
    actual = codec.encode(obj)
    assert actual == expected and list(actual) == list(expected)  # same keys, same order
    assert json.dumps(actual) == json.dumps(expected)
    if cls.__name__ in codec.EFFECTS:
        expected = codec._encode_effect_slowly(obj)
        actual = codec.encode_effect(obj)
        assert json.dumps(actual) == json.dumps(expected)
        assert actual == expected  # lists where the slow form has lists


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@given(data=st.data())
def test_the_text_encoders_write_the_compact_json_of_the_dicts(cls: type,
                                                              data: st.DataObject) -> None:
    obj = data.draw(instances(cls))
    compact = {"separators": (",", ":")}
    if cls.__name__ in codec.EVENTS:
        assert codec.EVENT_TEXT[cls](obj) == json.dumps(codec.encode(obj), **compact)
    else:
        assert codec.EFFECT_TEXT[cls](obj) == json.dumps(codec.encode_effect(obj), **compact)


@given(machine=st.text(), serial=st.integers(0, 2**40), fragment=st.text(),
       names=st.tuples(st.text(), st.text(), st.text()))
def test_the_transition_text_is_the_compact_json_of_its_list(
        machine: str, serial: int, fragment: str, names: tuple[str, str, str]) -> None:
    t = Transition(machine, serial, fragment, *names)
    assert codec.transition_text(t) == json.dumps(codec.encode_transition(t),
                                                  separators=(",", ":"))


def test_the_text_encoders_write_the_golden_bytes_of_every_class() -> None:
    """Byte for byte what the journal wrote before its encoders were made cheaper
    (codec_text.golden was written by main 579c3c9's codec from codec_samples.py): every
    event and effect class with typical and awkward values, and transitions, twice (the
    second time from the transition caches)."""
    from codec_samples import samples

    golden = (Path(__file__).parent / "codec_text.golden").read_text().splitlines()
    written = []
    for obj in samples():
        table = codec.EVENT_TEXT if type(obj).__name__ in codec.EVENTS else codec.EFFECT_TEXT
        written.append(table[type(obj)](obj))
    for _ in range(2):
        written += [codec.transition_text(t) for t in samples(transitions=True)]
    assert len(golden) == len(samples()) + len(samples(transitions=True))
    assert written == golden + golden[-len(samples(transitions=True)):]
    for line in golden:
        assert json.dumps(json.loads(line), separators=(",", ":")) == line
