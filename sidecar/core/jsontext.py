"""Compact JSON text, with the C encoder built once instead of per call.

``json.dumps(obj, separators=(",", ":"), ensure_ascii=...)`` makes a ``JSONEncoder`` and
then, in ``JSONEncoder.iterencode``, a new C encoder (``c_make_encoder``) on every call:
about half of what a short document costs. ``compact_encoder`` builds the C encoder once,
with the arguments ``iterencode`` would pass it (without the circular-reference check: the
documents encoded here are trees), so it returns the same text. Without the C accelerator
(not CPython), the plain encoder.

``ascii_string`` is the encoder's own function for one string (``json.dumps(s)``), which
the journal's text encoders (sidecar/core/codec.py) call per field.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any


def compact_encoder(ensure_ascii: bool = True) -> Callable[[Any], str]:
    """The function ``json.dumps(obj, separators=(",", ":"), ensure_ascii=ensure_ascii)``
    is, for documents without cycles."""
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii,
                               check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return encoder.encode
    strings = (json.encoder.encode_basestring_ascii if ensure_ascii
               else json.encoder.encode_basestring)
    chunks = make(None, encoder.default, strings, None, encoder.key_separator,
                  encoder.item_separator, encoder.sort_keys, encoder.skipkeys,
                  encoder.allow_nan)

    def encode(obj: Any) -> str:
        return "".join(chunks(obj, 0))

    return encode


# json.dumps(s) for one str, without the encoder around it (C in CPython, Python elsewhere)
ascii_string: Callable[[str], str] = json.encoder.encode_basestring_ascii


_decode = json.JSONDecoder().decode  # what ``json.loads`` uses when given no options


def loads(data: bytes) -> Any:
    """``json.loads(data)``. Bytes that start with ``{`` and a non-NUL byte are UTF-8 to
    ``json.detect_encoding``, so they are decoded as ``json.loads`` would (UTF-8,
    "surrogatepass") without asking it: the same value, or the same error."""
    if data[:1] == b"{" and data[1:2] != b"\x00":
        return _decode(data.decode("utf-8", "surrogatepass"))
    return json.loads(data)
