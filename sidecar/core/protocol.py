"""The Iterum wire formats: descriptors, socket framing and message discrimination.

Pure functions only. Parsing is lenient where the Go sidecar was (unknown keys and
``null`` values are accepted, §16.12) and strict where leniency would lose data or let a
name escape the volume. A descriptor's ``files`` is required: without it the descriptor is
invalid. ``null`` is a fragment without files, like ``[]``: the Go sidecar publishes a
zero-file output as ``"files": null`` (a nil slice), so a Go peer upstream sends it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import json.encoder
import posixpath
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

from .jsontext import compact_encoder, loads

ID_LENGTH = 64
HEADER = struct.Struct("<I")
KILL = {"status": "complete"}  # §16.2: what we send, and what we accept back


class InvalidMessage(ValueError):
    """A message the sidecar refuses; ``reason`` is a short stable code for headers and metrics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# --- names and paths -----------------------------------------------------------------

_BAD_PARTS = frozenset(("..", ".", ""))
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def safe_relative(name: Any, what: str = "name") -> str:
    """A relative POSIX path that stays where it is put: no '..', no absolute, no NUL."""
    if not isinstance(name, str) or not name:
        raise InvalidMessage("unsafe-name", f"{what} must be a non-empty string")
    if "\x00" in name:
        raise InvalidMessage("unsafe-name", f"{what} {name!r} contains NUL")
    if name.startswith("/"):
        raise InvalidMessage("unsafe-name", f"{what} {name!r} is absolute")
    if not _BAD_PARTS.isdisjoint(name.split("/")):
        raise InvalidMessage("unsafe-name", f"{what} {name!r} has an empty, '.' or '..' part")
    return name


def valid_bucket(bucket: Any) -> str:
    if not isinstance(bucket, str) or not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidMessage("invalid-bucket", f"bucket {bucket!r} is not a valid bucket name")
    return bucket


def is_fragment_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == ID_LENGTH


def output_id(step: str, predecessors: list[str], index: int) -> str:
    """§16.15: a pure function of the step, the sorted predecessors and the output's index."""
    text = "\n".join([step, *sorted(predecessors), str(index)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def inside(root: str, path: str) -> bool:
    """Lexically, is ``path`` strictly below ``root``? (symlinks are checked at the I/O edge)"""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        return False
    return posixpath.normpath(path).startswith(_below(root))


@functools.lru_cache(maxsize=8)
def _below(root: str) -> str:
    """What every path strictly below ``root`` starts with (the volume's, once)."""
    return posixpath.normpath(root).rstrip("/") + "/"


# --- RemoteFragmentDesc (RabbitMQ) -----------------------------------------------------
# The parsed messages are named tuples, not frozen dataclasses: a few are made for every
# fragment on the loop thread, and a frozen dataclass's ``__init__`` costs a call of
# ``object.__setattr__`` per field (models.Transition says the same).


class RemoteFile(NamedTuple):
    name: str
    path: str  # the object key inside bucket
    bucket: str


class RemoteFragment(NamedTuple):
    fragment_id: str
    files: tuple[RemoteFile, ...]
    predecessors: list[str] | None  # forwarded as received (null stays null, as in Go)
    custom: Any


def parse_remote(body: bytes) -> RemoteFragment:
    """Validate a RemoteFragmentDesc body; raise InvalidMessage with the reason."""
    try:
        data = loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidMessage("invalid-json", f"body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("invalid-descriptor", "body is not a JSON object")
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidMessage("invalid-descriptor", "'metadata' must be an object")
    fragment_id = meta.get("fragment_id")
    if not is_fragment_id(fragment_id):
        raise InvalidMessage("invalid-fragment-id",
                             "metadata.fragment_id must be a 64-character string")
    predecessors = meta.get("predecessors")
    if predecessors is not None and not (
        isinstance(predecessors, list) and all(isinstance(p, str) for p in predecessors)
    ):
        raise InvalidMessage("invalid-descriptor", "metadata.predecessors must be strings")
    if "files" not in data:  # the one key that may not be missing: a body without it is
        # not a fragment description (the transformation would get one it cannot use)
        raise InvalidMessage("invalid-descriptor", "'files' is missing; it must be an "
                             "array ([] for a fragment without files)")
    files = data["files"]
    if files is None:  # how Go encodes an empty slice: a Go upstream's zero-file output
        files = []
    if not isinstance(files, list):
        raise InvalidMessage("invalid-descriptor", "'files' must be an array")
    parsed = tuple(_remote_file(f) for f in files)
    _unique_local_names(parsed)
    return RemoteFragment(fragment_id, parsed, predecessors, meta.get("custom"))


def _remote_file(entry: Any) -> RemoteFile:
    if not isinstance(entry, dict):
        raise InvalidMessage("invalid-descriptor", "each file must be an object")
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise InvalidMessage("invalid-descriptor", "file path (object key) must be a string")
    return RemoteFile(safe_relative(entry.get("name"), "file name"), path,
                      valid_bucket(entry.get("bucket")))


def _unique_local_names(files: tuple[RemoteFile, ...]) -> None:
    seen: set[tuple[str, str]] = set()
    for f in files:
        if (f.bucket, f.name) in seen:
            raise InvalidMessage("duplicate-file", f"file {f.name!r} of {f.bucket} appears twice")
        seen.add((f.bucket, f.name))


def local_input_path(volume: str, fragment: RemoteFragment, f: RemoteFile) -> str:
    """§16.7: a directory per fragment, so equal names from different fragments never collide."""
    return posixpath.join(volume, f.bucket, fragment.fragment_id, f.name)


def input_dirs(volume: str, fragment: RemoteFragment) -> tuple[str, ...]:
    """Directories the sidecar created for this input, deepest first, for cleanup."""
    return input_layout(volume, fragment)[1]


def input_layout(volume: str, fragment: RemoteFragment
                 ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Where an input goes on the volume: its files' ``local_input_path``s, its
    ``input_dirs``, and the bucket directories they are in (one per file). Joined step by
    step (``posixpath.join`` joins its arguments one after another), each part once."""
    paths: list[str] = []
    buckets: list[str] = []
    dirs: set[str] = set()
    for f in fragment.files:
        bucket_dir = posixpath.join(volume, f.bucket)
        top = posixpath.join(bucket_dir, fragment.fragment_id)
        path = posixpath.join(top, f.name)
        paths.append(path)
        buckets.append(bucket_dir)
        dirs.add(top)
        if "/" in f.name:  # a name with directories: each one below ``top`` too
            d = posixpath.dirname(path)
            while d != top and d.startswith(top):
                dirs.add(d)
                d = posixpath.dirname(d)
    deepest_first = sorted(dirs, key=lambda d: (-d.count("/"), d)) if len(dirs) > 1 else dirs
    return tuple(paths), tuple(deepest_first), tuple(buckets)


def encode_remote(fragment_id: str, files: list[RemoteFile], predecessors: list[str],
                  target_queue: str | None, custom: Any) -> bytes:
    """A RemoteFragmentDesc in the Go field order; predecessors always an array (§8).

    ``dumps`` of ``{"files": [{"name", "path", "bucket"}, ...], "metadata":
    {"fragment_id", "predecessors", "target_queue"?, "custom"?}}``, the same text (a
    property test compares them), written out around json's own string encoder: every
    value but ``custom`` is a string, and the encoder's walk over the dicts and lists costs
    three times this (one descriptor a fragment, on the loop thread).
    """
    entries = ",".join(f'{{"name":{_string(f.name)},"path":{_string(f.path)},'
                       f'"bucket":{_string(f.bucket)}}}' for f in files)
    text = (f'{{"files":[{entries}],"metadata":{{"fragment_id":{_string(fragment_id)},'
            f'"predecessors":{_strings(predecessors)}')
    if target_queue:
        text += ',"target_queue":' + _string(target_queue)
    if custom not in (None, {}):
        text += ',"custom":' + _compact(custom)
    return (text + "}}").encode("utf-8")


def encode_lineage(step: str, descriptor: bytes) -> bytes:
    """{transformation_step, description}, the description byte-identical to what was published."""
    return _lineage_head(step) + descriptor + b"}"


@functools.lru_cache(maxsize=8)
def _lineage_head(step: str) -> bytes:
    """What every lineage message of ``step`` starts with (the step's, encoded once)."""
    return b'{"transformation_step":' + dumps(step) + b',"description":'


_compact = compact_encoder(ensure_ascii=False)
# json's own encoder of one string (C in CPython), the one ``_compact`` calls for every str
_string: Callable[[str], str] = json.encoder.encode_basestring


def _strings(values: Iterable[str]) -> str:
    """A JSON array of strings, as ``_compact`` writes it."""
    return "[" + ",".join(map(_string, values)) + "]"


def dumps(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` as UTF-8."""
    return _compact(value).encode("utf-8")


# --- LocalFragmentDesc (socket) --------------------------------------------------------


def encode_local(fragment: RemoteFragment, paths: list[str]) -> bytes:
    """What the transformation sees (§3.3): files in message order, custom only if non-empty.
    ``dumps`` of ``{"files": [{"name", "path"}, ...], "metadata": {"fragment_id",
    "predecessors", "custom"?}}``, written out as ``encode_remote`` is (predecessors as
    received: an array of strings, or null)."""
    entries = ",".join(f'{{"name":{_string(f.name)},"path":{_string(p)}}}'
                       for f, p in zip(fragment.files, paths, strict=True))
    preds = fragment.predecessors
    text = (f'{{"files":[{entries}],"metadata":{{"fragment_id":'
            f'{_string(fragment.fragment_id)},"predecessors":'
            f'{"null" if preds is None else _strings(preds)}')
    if fragment.custom not in (None, {}):
        text += ',"custom":' + _compact(fragment.custom)
    return (text + "}}").encode("utf-8")


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


class FrameTooLarge(ValueError):
    pass


class FrameDecoder:
    """Incremental reader of 4-byte little-endian length-prefixed frames (read-exact)."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > self.max_size:
                raise FrameTooLarge(f"frame of {size} bytes exceeds the cap of {self.max_size}")
            end = HEADER.size + size
            if len(self._buf) < end:
                break
            frames.append(bytes(self._buf[HEADER.size:end]))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


# --- messages from the transformation (fts.sock, §4.4) ----------------------------------


class LocalFile(NamedTuple):
    name: str
    path: str


class OutputFragment(NamedTuple):
    files: tuple[LocalFile, ...]
    predecessors: tuple[str, ...]
    predecessors_given: bool  # False when missing, null or empty (§16.14)
    output_channel: str | None
    custom: Any
    problem: str = ""  # why the output cannot be uploaded as it is, if it cannot


class DoneWith(NamedTuple):
    fragment_id: str


@dataclass(frozen=True, slots=True)
class Kill:
    pass


def parse_frame(payload: bytes) -> OutputFragment | DoneWith | Kill:
    """Classify one frame in the original's order: output fragment, done_with, kill."""
    try:
        data = loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidMessage("invalid-json", f"frame is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("unrecognised", "frame is not a JSON object")
    files = data.get("files")
    if isinstance(files, list) and files:
        return _output(files, data.get("metadata"))
    if is_fragment_id(data.get("fragment_id")):
        return DoneWith(data["fragment_id"])
    if data.get("status") == "complete":
        return Kill()
    raise InvalidMessage("unrecognised",
                         "frame is neither an output fragment, a done_with nor a kill")


def _output(files: list[Any], meta: Any) -> OutputFragment:
    """An output fragment; a bad file entry becomes ``problem`` so that the core can still
    hold back the predecessors' acks (the output must not vanish with its inputs acked)."""
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise InvalidMessage("invalid-output", "output metadata must be an object")
    preds = meta.get("predecessors")
    if preds is None:
        preds = []
    if not isinstance(preds, list) or not all(isinstance(p, str) for p in preds):
        raise InvalidMessage("invalid-output", "output predecessors must be strings")
    local, problem = _output_files(files)
    channel = meta.get("output_channel")
    if channel is not None and not isinstance(channel, str):
        problem = problem or "output_channel must be a string"
        channel = None
    return OutputFragment(tuple(local), tuple(preds), bool(preds), channel or None,
                          meta.get("custom"), problem)


def _output_files(files: list[Any]) -> tuple[list[LocalFile], str]:
    local: list[LocalFile] = []
    problem = ""
    for entry in files:
        path = entry.get("path") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path:
            problem = problem or "each output file needs a string path"
            continue
        try:
            name = safe_relative(name, "output file name")
        except InvalidMessage as err:
            problem = problem or str(err)
            name = str(name)
        local.append(LocalFile(name, path))
    names = [f.name for f in local]
    if len(set(names)) != len(names):
        problem = problem or "output file names must be unique"
    return local, problem
