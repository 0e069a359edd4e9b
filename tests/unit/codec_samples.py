"""Fixed instances of every event and effect class, and transitions, for the journal's
golden text (tests/unit/codec_text.golden, test_codec.py): typical values and awkward ones
(escapes, non-ASCII, DEL, long and non-UTF-8 bytes, empty tuples, None)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from sidecar.core import Transition, codec

TYPICAL: dict[Any, Any] = {str: "bench-step", int: 7, bool: True, float: 0.25,
                           bytes: b'{"fragment_id": "abc"}'}
AWKWARD: dict[Any, Any] = {str: 'é"\\\x7f\n\u2028/x', int: -(2**40), bool: False,
                           float: 1e-05, bytes: '{"name": "été"}'.encode() * 5}
BINARY: dict[Any, Any] = {**AWKWARD, str: "", int: 0, bytes: b"\xff\x00garbage"}


def _value(hint: Any, scalars: dict[Any, Any], empty: bool) -> Any:
    if hint in scalars:
        return scalars[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return () if empty else (_value(args[0], scalars, empty),) * 2
    if origin is tuple:
        return tuple(_value(a, scalars, empty) for a in args)
    if type(None) in args:  # X | None
        return None if empty else _value(args[0], scalars, empty)
    raise AssertionError(f"no sample for {hint!r}: extend codec_samples.py")


def samples(transitions: bool = False) -> list[Any]:
    if transitions:
        return [Transition("input", 3, "5b1f0c2a9e7d" + "0" * 52, "download_done",
                           "received", "downloaded"),
                Transition("step", 0, "", "exit", "transformation_done", "exited"),
                Transition("output", 2**40, 'é"\\\x7f', "new", "", "received")]
    found = []
    for cls in sorted({**codec.EVENTS, **codec.EFFECTS}.values(), key=lambda c: c.__name__):
        hints = typing.get_type_hints(cls)
        for scalars, empty in ((TYPICAL, False), (AWKWARD, True), (BINARY, False)):
            found.append(cls(**{f.name: _value(hints[f.name], scalars, empty)
                                for f in dataclasses.fields(cls)}))
    return found
