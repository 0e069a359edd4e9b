"""JSON form of the core's events, effects and transitions (for the journal and replay).

Events and effects are frozen, slotted dataclasses whose fields are str, int, float, bool,
None, bytes or tuples of those. Their JSON form is an object with ``kind`` (the class name)
and one key per field. Tuples become arrays (and arrays become tuples again on the way
back). ``bytes`` fields hold mostly UTF-8 JSON (message bodies, socket frames), so they are
written as a JSON string when they are valid UTF-8, which keeps a journal readable with
``jq``; anything else is written as ``{"base64": "..."}``. Decoding knows which fields are
bytes from the dataclass annotations, so no marker is needed on the common path.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import typing
from collections.abc import Callable
from typing import Any

from . import effects as fx
from . import events as ev
from .jsontext import ascii_string, compact_encoder
from .models import Transition


class CodecError(ValueError):
    pass


def _classes(module: Any, base: type) -> dict[str, type]:
    found = {}
    for name in dir(module):
        obj = getattr(module, name)
        if isinstance(obj, type) and issubclass(obj, base) and obj is not base:
            found[name] = obj
    return found


EVENTS: dict[str, type] = _classes(ev, ev.Event)
EFFECTS: dict[str, type] = _classes(fx, fx.Effect)
_KINDS: dict[str, type] = {**EVENTS, **EFFECTS}
if len(_KINDS) != len(EVENTS) + len(EFFECTS):  # pragma: no cover - a naming mistake
    raise RuntimeError("an event and an effect share a class name")


def _layout(cls: type) -> tuple[tuple[str, bool], ...]:
    """(field name, is bytes) for each field, from the resolved annotations."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name] is bytes) for f in dataclasses.fields(cls))


def _tuple_fields(cls: type) -> frozenset[str]:
    hints = typing.get_type_hints(cls)
    return frozenset(f.name for f in dataclasses.fields(cls)
                     if typing.get_origin(hints[f.name]) is tuple)


_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {c: _layout(c) for c in _KINDS.values()}
_NAMES: dict[type, frozenset[str]] = {c: frozenset({"kind", *(n for n, _ in f)})
                                      for c, f in _FIELDS.items()}


def bytes_out(value: bytes) -> str | dict[str, str]:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def bytes_in(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("base64"), str):
        return base64.b64decode(value["base64"], validate=True)
    raise CodecError(f"not an encoded bytes value: {value!r}")


def encode(obj: ev.Event | fx.Effect) -> dict[str, Any]:
    """An event or effect as a JSON-ready dict (tuples stay tuples; json writes arrays)."""
    return _ENCODERS[type(obj)](obj)


def _encode_slowly(obj: ev.Event | fx.Effect) -> dict[str, Any]:
    """What ``encode`` returns, field by field (the definition ``_ENCODERS`` compiles)."""
    out: dict[str, Any] = {"kind": type(obj).__name__}
    for name, is_bytes in _FIELDS[type(obj)]:
        value = getattr(obj, name)
        out[name] = bytes_out(value) if is_bytes else value
    return out


def decode(data: dict[str, Any]) -> Any:
    """The event or effect that ``encode`` turned into ``data`` (after a trip through JSON)."""
    try:
        cls = _KINDS[data["kind"]]
    except (KeyError, TypeError):
        raise CodecError(f"unknown kind in {data!r}"[:200]) from None
    if not _NAMES[cls].issuperset(data):
        unknown = sorted(set(data) - _NAMES[cls])
        raise CodecError(f"{data['kind']} has no field(s) {unknown}")
    values = {}
    for name, is_bytes in _FIELDS[cls]:
        if name not in data:
            continue  # a field with a default, absent in an older journal
        value = data[name]
        values[name] = bytes_in(value) if is_bytes else _tuples(value)
    try:
        return cls(**values)
    except TypeError as err:
        raise CodecError(f"{data['kind']}: {err}") from None


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


# --- the compact forms a journal line records for what the core answered ---------------
#
# Replay recomputes the effects (the core is deterministic), so a line needs only enough
# of them to check the recomputation and to be read by a person: every field, except that
# a bytes field longer than SHORT_BYTES (descriptor and lineage bodies, fragment frames) is
# recorded as its SHA-256 prefix and length. Transitions name their fragment by a 12-char
# prefix of its id. Both halve a line's size compared with recording everything.

SHORT_BYTES = 64
FRAGMENT_PREFIX = 12


def digest(value: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(value).hexdigest()[:16], "len": len(value)}


def encode_effect(effect: fx.Effect) -> dict[str, Any]:
    """The recorded form, already JSON-shaped (arrays as lists), so that what replay reads
    back from a line compares equal to a fresh encoding without conversion."""
    return _EFFECT_ENCODERS[type(effect)](effect)


def _short_bytes(value: bytes) -> str | dict[str, Any]:
    return bytes_out(value) if len(value) <= SHORT_BYTES else digest(value)


def _encode_effect_slowly(effect: fx.Effect) -> dict[str, Any]:
    """What ``encode_effect`` returns, field by field (the definition the compiled
    encoders in ``_EFFECT_ENCODERS`` follow)."""
    out: dict[str, Any] = {"kind": type(effect).__name__}
    tuples = _TUPLES[type(effect)]
    for name, is_bytes in _FIELDS[type(effect)]:
        value = getattr(effect, name)
        if is_bytes:
            value = _short_bytes(value)
        elif name in tuples:
            value = _lists(value)
        out[name] = value
    return out


def _lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_lists(v) for v in value]
    return value


def encode_transition(t: Transition) -> list[Any]:
    """Compact: [machine, serial, fragment id prefix, trigger, source, dest]."""
    machine, serial, fragment, trigger, source, dest = t  # unpacking: no attribute lookups
    return [machine, serial, fragment[:FRAGMENT_PREFIX], trigger, source, dest]


# --- compiled encoders -----------------------------------------------------------------

_Encoder = Callable[[Any], dict[str, Any]]
#
# The journal encodes every event and effect the core handles, on the loop thread: a loop
# over the fields with getattr per field costs about three times a dict display built by
# a function made for the class (as ``dataclasses`` makes ``__init__``). The text below
# only names fields and the helpers above; ``tests/unit/test_codec.py`` checks each
# compiled encoder against the field-by-field definition.


def _compile(cls: type, value_of: Callable[[type, str, bool], str]) -> _Encoder:
    """A function ``obj -> {"kind": ..., field: value_of(name, is_bytes), ...}``."""
    items = [f'"kind": {cls.__name__!r}']
    for name, is_bytes in _FIELDS[cls]:
        if not name.isidentifier():  # pragma: no cover - dataclass fields always are
            raise RuntimeError(f"{cls.__name__}.{name}")
        items.append(f"{name!r}: {value_of(cls, name, is_bytes)}")
    source = f"def encode(o):\n    return {{{', '.join(items)}}}\n"
    namespace: dict[str, Any] = {"bytes_out": bytes_out, "_short_bytes": _short_bytes,
                                 "_lists": _lists}
    exec(source, namespace)  # the text is made above from field names only
    encoder: _Encoder = namespace["encode"]
    return encoder


def _event_value(_cls: type, name: str, is_bytes: bool) -> str:
    return f"bytes_out(o.{name})" if is_bytes else f"o.{name}"


def _effect_value(cls: type, name: str, is_bytes: bool) -> str:
    if is_bytes:
        return f"_short_bytes(o.{name})"
    if name in _TUPLES[cls]:
        return f"_lists(o.{name})"
    return f"o.{name}"


class _PerClass(dict[type, Any]):
    """What is made for a class on its first use, not for every class at import (a run's
    start-up pays for none: issue 14); a class outside ``classes`` is a KeyError."""

    def __init__(self, classes: Any, make: Callable[[type], Any]):
        super().__init__()
        self._classes = frozenset(classes)
        self._make = make

    def __missing__(self, cls: type) -> Any:
        if cls not in self._classes:
            raise KeyError(cls)
        made = self[cls] = self._make(cls)
        return made


_TUPLES: dict[type, frozenset[str]] = _PerClass(_KINDS.values(), _tuple_fields)
_ENCODERS: dict[type, _Encoder] = _PerClass(_KINDS.values(),
                                            lambda c: _compile(c, _event_value))
_EFFECT_ENCODERS: dict[type, _Encoder] = _PerClass(EFFECTS.values(),
                                                   lambda c: _compile(c, _effect_value))


# --- the same, as JSON text ------------------------------------------------------------
#
# A journal line is the compact JSON of those dicts. Building the dicts and walking them
# with the generic encoder cost two thirds of the journal; functions made for each class
# (as above) write the text directly: one f-string per event or effect, the C string
# escaper per str field, ``str`` of ints. ``tests/unit/test_codec.py`` checks that each
# writes ``json.dumps(encode(obj), separators=(",", ":"))``, and the journal's tests that
# lines are unchanged.

_Text = Callable[[Any], str]
_json = compact_encoder()
# a dict, not a pair indexed by the value: -1 or 2 in a bool field is a LookupError (and the
# line falls back to json), not a silent "true"
_BOOLS = {False: "false", True: "true"}
# repr of an int: the text json writes, and a TypeError for what is not an int (so a field
# not of its type falls back to json's way). Half the cost of f"{value:d}", whose format
# spec is parsed on every call.
_int = int.__repr__


def bytes_text(value: bytes) -> str:
    """The JSON text of ``bytes_out(value)``: text written directly (the usual case), the
    base64 form through ``bytes_out`` itself."""
    try:
        return ascii_string(value.decode("utf-8"))
    except UnicodeDecodeError:
        return _json(bytes_out(value))


def _short_bytes_text(value: bytes) -> str:
    """The JSON text of ``_short_bytes(value)``; a digest's written directly (three a
    fragment: through ``digest`` and the encoder it costs the journal 6% more)."""
    if len(value) <= SHORT_BYTES:
        return bytes_text(value)
    return f'{{"sha256":"{hashlib.sha256(value).hexdigest()[:16]}","len":{len(value)}}}'


# The text around serial and fragment of each (machine, trigger, source, dest): a state
# table has a few dozen, so four of the five strings are escaped once, not per transition.
_TRANSITION_PARTS: dict[tuple[str, str, str, str], tuple[str, str]] = {}
_TRANSITION_PARTS_MAX = 4096  # a bound for what is not a state table (tests' random names)
# The text of serial and fragment, for the fragments in flight: each makes 4-6
# transitions, and this text costs half of one. Emptied when full (a sidecar has at most
# a few hundred fragments in flight; a miss costs no more than it did before the cache).
_FRAGMENT_TEXT: dict[tuple[int, str], str] = {}
_FRAGMENT_TEXT_MAX = 4096


def transition_text(t: Transition) -> str:
    """The JSON text of ``encode_transition(t)``."""
    return transitions_text([t])


def _parts(key: tuple[str, str, str, str]) -> tuple[str, str]:
    machine, trigger, source, dest = key
    parts = (f"[{ascii_string(machine)},",
             f",{ascii_string(trigger)},{ascii_string(source)},{ascii_string(dest)}]")
    if len(_TRANSITION_PARTS) < _TRANSITION_PARTS_MAX:
        _TRANSITION_PARTS[key] = parts
    return parts


def _ids(key: tuple[int, str]) -> str:
    serial, fragment = key
    middle = f"{_int(serial)},{ascii_string(fragment[:FRAGMENT_PREFIX])}"
    if len(_FRAGMENT_TEXT) >= _FRAGMENT_TEXT_MAX:
        _FRAGMENT_TEXT.clear()
    _FRAGMENT_TEXT[key] = middle
    return middle


def transitions_text(transitions: list[Transition]) -> str:
    """The JSON text of ``[encode_transition(t) for t in transitions]`` without brackets."""
    parts, ids = _TRANSITION_PARTS, _FRAGMENT_TEXT
    out = []
    for machine, serial, fragment, trigger, source, dest in transitions:
        key = (machine, trigger, source, dest)
        head, tail = parts.get(key) or _parts(key)
        middle = ids.get((serial, fragment)) or _ids((serial, fragment))
        out.append(f"{head}{middle}{tail}")
    return ",".join(out)


def _compile_text(cls: type, bytes_function: str) -> _Text:
    """A function ``obj -> f'{"kind":...,"field":<its JSON text>,...}'``."""
    hints = typing.get_type_hints(cls)
    parts = [f'{{{{"kind":"{cls.__name__}"']
    for name, is_bytes in _FIELDS[cls]:
        if not name.isidentifier():  # pragma: no cover - dataclass fields always are
            raise RuntimeError(f"{cls.__name__}.{name}")
        hint = hints[name]
        value = (f"{bytes_function}(o.{name})" if is_bytes
                 else f"ascii_string(o.{name})" if hint is str
                 else f"_int(o.{name})" if hint is int
                 else f"_BOOLS[o.{name}]" if hint is bool
                 # the common values written directly; json's encoder costs 2-3 times more
                 else f'"null" if o.{name} is None else ascii_string(o.{name})'
                 if hint == str | None
                 else f'"[]" if o.{name} == () else _json(o.{name})'
                 if typing.get_origin(hint) is tuple
                 else f"_json(o.{name})")
        parts.append(f',"{name}":{{{value}}}')
    parts.append("}}")
    source = f"def text(o):\n    return f'{''.join(parts)}'\n"
    namespace: dict[str, Any] = {"ascii_string": ascii_string, "bytes_text": bytes_text,
                                 "_short_bytes_text": _short_bytes_text, "_json": _json,
                                 "_BOOLS": _BOOLS, "_int": _int}
    exec(source, namespace)  # the text is made above from field and class names only
    text: _Text = namespace["text"]
    return text


EVENT_TEXT: dict[type, _Text] = _PerClass(EVENTS.values(),
                                          lambda c: _compile_text(c, "bytes_text"))
EFFECT_TEXT: dict[type, _Text] = _PerClass(EFFECTS.values(),
                                           lambda c: _compile_text(c, "_short_bytes_text"))
