"""The journal: every event the core consumes, in order, as JSON lines (and reading it back).

A journal is a directory of segments ``run<R>-seg<S>.jsonl``: ``R`` counts the sidecar
processes that used the directory, ``S`` the segments of one process. Every segment is
self-contained. It begins with two lines:

* ``{"header": {...}}``: format, versions, run and segment numbers, wall-clock start, and
  the ``CoreConfig`` the core was built with;
* ``{"checkpoint": {...}, "after": N}``: the core's complete state after event ``N``
  (sidecar/core/snapshot.py), so replay can start at any segment.

Then one line per event the core consumed::

    {"seq": 7, "t": 5123.0841, "event": {"kind": "FileDownloaded", ...},
     "tr": [["input", 3, "5b1f0c2a9e7d", "download_done", "received", "downloaded"]],
     "fx": [{"kind": "SendFrame", "conn": 1, "payload": {"sha256": "…", "len": 243}}]}

A segment is closed once its event lines reach ``max_bytes`` (the header and checkpoint
are not counted, so a segment always holds that much history; a checkpoint is about 75
bytes per remembered output index entry, at most 100,000 of them).

``t`` is the loop clock reading the core was given; the event is recorded in full (bytes
as UTF-8 text when they are text). ``tr`` are the transitions the event caused (fragment
ids shortened to 12 characters) and ``fx`` the effects it returned, long bytes fields as a
digest (sidecar/core/codec.py): replay recomputes both and checks them.

Recording is cheap on the loop thread: the line's text written directly by functions made
for each event and effect class (sidecar/core/codec.py: the text ``json.dumps`` would write
for the dicts) and a buffered ``write`` per event. The buffer is flushed by a timer on the
loop, armed by the first write after a flush (so at most four times a second, and never
while nothing is recorded), and at exit, never fsynced. A segment that reaches
``max_bytes`` is closed and a new one started (with a fresh checkpoint); only the newest
``keep`` segments of the directory are kept. A write error (disk full) disables
the journal with one warning: the sidecar itself never fails because of its journal.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
import platform
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import transitions

from .. import __version__
from ..core import Core, Transition, codec
from ..core import effects as fx
from ..core import events as ev
from ..core.jsontext import compact_encoder
from ..core.snapshot import config_to_json
from .fsmodes import PRIVATE_DIR, PRIVATE_FILE, create_file, make_dirs
from .hooks import Loop, Observer

FORMAT = 2  # 2: FileDownloaded and FileUploaded carry sha256
READS = (1, 2)  # format 1 lines decode with the field's default ("")
SEGMENT = re.compile(r"^run(\d{4,})-seg(\d{4,})\.jsonl$")
# Seconds from the first write after a flush to the next flush (a loop timer). What a
# killed process had not flushed is lost to a restarted one (sidecar/shell/recovery.py), so this is
# kept short: a flush is one write() of what accumulated, never an fsync.
FLUSH_INTERVAL = 0.25
WRITE_BUFFER = 1 << 20


# json.dumps(obj, separators=(",", ":")): the same text at half the cost per line (the C
# encoder is built once, not per line).
_dumps = compact_encoder()

_EVENT_TEXT, _EFFECT_TEXT = codec.EVENT_TEXT, codec.EFFECT_TEXT
_transitions_text = codec.transitions_text

log = logging.getLogger("sidecar.journal")


class JournalError(ValueError):
    """A journal that cannot be read: missing, not a journal, corrupt, or with a gap."""


def segment_name(run: int, segment: int) -> str:
    return f"run{run:04d}-seg{segment:04d}.jsonl"


def list_segments(directory: str) -> list[tuple[int, int, str]]:
    """(run, segment, path) of every segment in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = SEGMENT.match(name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), os.path.join(directory, name)))
    return sorted(found)


def versions() -> dict[str, str]:
    # transitions.__version__, not importlib.metadata: that import and its search of the
    # installed distributions cost the start-up ~25 ms and ~2 MiB (issue 14)
    return {"sidecar": __version__, "python": platform.python_version(),
            "transitions": transitions.__version__}


# --- recording -------------------------------------------------------------------------


class Recorder(Observer):
    """A ``Runner`` observer that writes the journal of one sidecar process."""

    def __init__(self, directory: str, core: Core, *, max_bytes: int, keep: int,
                 wall_clock: Any = time.time, loop: Loop | None = None, begin: bool = True):
        """``loop``: arms the flush timer after the first write since a flush (None: the
        caller flushes). ``begin=False``: nothing is opened until ``begin()``."""
        self.directory = directory
        self.core = core
        self.max_bytes = max_bytes
        self.keep = keep
        self.wall_clock = wall_clock
        self.loop = loop
        self.run = 0
        self.segment = 0
        self.seq = 0
        self.size = 0
        self.path = ""
        self._file: IO[str] | None = None
        self.unflushed = False
        self._header: dict[str, Any] = {}
        if begin:
            self.begin()

    def begin(self) -> None:
        """Open this run's first segment (OSError if the directory cannot be made)."""
        make_dirs(self.directory, PRIVATE_DIR)  # message bodies: the sidecar's only
        existing = list_segments(self.directory)
        self.run = (existing[-1][0] + 1) if existing else 1
        self._header = {"format": FORMAT, **versions(), "run": self.run,
                        "config": config_to_json(self.core.cfg)}
        self._open_segment()

    @property
    def active(self) -> bool:
        return self._file is not None

    def __call__(self, event: ev.Event, now: float, effects: list[fx.Effect],
                 transitions: list[Transition]) -> None:
        if self._file is None:
            return
        self.seq += 1
        # the text of _dumps({"seq": ..., "t": now, "event": codec.encode(event), "tr":
        # [codec.encode_transition(t) ...], "fx": [codec.encode_effect(e) ...]}), written
        # without the dicts (sidecar/core/codec.py); repr(now) is json's text of a float
        try:
            line = (f'{{"seq":{self.seq},"t":{now!r},'
                    f'"event":{_EVENT_TEXT[type(event)](event)},'
                    f'"tr":[{_transitions_text(transitions) if transitions else ""}],'
                    f'"fx":[{",".join([_EFFECT_TEXT[type(e)](e) for e in effects])}]}}\n')
        except (TypeError, ValueError, LookupError):  # a field not of its type: json's way
            line = _dumps({"seq": self.seq, "t": now, "event": codec.encode(event),
                           "tr": [codec.encode_transition(t) for t in transitions],
                           "fx": [codec.encode_effect(e) for e in effects]}) + "\n"
        self._write(line)
        if self.size >= self.max_bytes and self._file is not None:
            self._rotate()

    def flush(self) -> None:
        self.unflushed = False
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as err:
                self._give_up(err)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as err:
                log.warning("journal: could not close %s: %s", self.path, err)
            self._file = None

    # --- segments ----------------------------------------------------------------------

    def _open_segment(self) -> None:
        self.segment += 1
        self.path = os.path.join(self.directory, segment_name(self.run, self.segment))
        try:
            # kept open for the whole segment, closed by _rotate/close
            self._file = open(  # noqa: SIM115
                self.path, "w", encoding="utf-8", buffering=WRITE_BUFFER,
                opener=lambda path, flags: create_file(path, PRIVATE_FILE, flags))
        except OSError as err:
            self._give_up(err)
            return
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wall_clock()))
        header = {**self._header, "segment": self.segment, "started": started}
        self._write(_dumps({"header": header}) + "\n")
        self._write(_dumps({"checkpoint": self.core.snapshot(), "after": self.seq}) + "\n")
        # Only event lines count towards max_bytes: a checkpoint larger than the bound
        # (a big output index) must not make every following event start a new segment.
        self.size = 0
        self._prune()

    def _rotate(self) -> None:
        self.close()
        self._open_segment()

    def _prune(self) -> None:
        for _, _, path in list_segments(self.directory)[:-self.keep]:
            try:
                os.remove(path)
            except OSError as err:
                log.warning("journal: could not remove old segment %s: %s", path, err)

    def _write(self, line: str) -> None:
        assert self._file is not None
        try:
            self._file.write(line)
        except OSError as err:
            self._give_up(err)
            return
        self.size += len(line)  # ASCII: json.dumps escapes everything else
        if not self.unflushed:
            self.unflushed = True
            if self.loop is not None:
                # no periodic timer: an idle sidecar records nothing and must not wake up
                self.loop.call_later(FLUSH_INTERVAL, self.flush)

    def _give_up(self, err: OSError) -> None:
        log.warning("journal: writing %s failed (%s); recording stopped, the sidecar goes on",
                    self.path or self.directory, err)
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass


# --- reading ---------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    """One consumed event as recorded, with what the core answered at the time."""

    seq: int
    t: float
    event: ev.Event
    transitions: list[list[Any]]  # as codec.encode_transition wrote them
    effects: list[dict[str, Any]]  # as codec.encode_effect wrote them


@dataclass
class Segment:
    path: str
    header: dict[str, Any]
    checkpoint: dict[str, Any]
    after: int  # the checkpoint is the state after this seq
    records: list[Record] = field(default_factory=list)
    truncated: bool = False  # the last line was cut short (the process was killed)


@dataclass
class Journal:
    segments: list[Segment]

    @property
    def header(self) -> dict[str, Any]:
        return self.segments[0].header

    def records(self) -> Iterator[Record]:
        for segment in self.segments:
            yield from segment.records

    @property
    def count(self) -> int:
        return sum(len(s.records) for s in self.segments)


def read_segment(path: str) -> Segment:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as err:
        raise JournalError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise JournalError(f"{path}: not a journal segment (not UTF-8 text)") from None
    if lines and lines[-1] == "":
        lines.pop()
    complete_last = True
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            complete_last = False  # killed mid-write: keep what is whole
            lines.pop()
    if len(lines) < 2:
        raise JournalError(f"{path}: not a journal segment (no header and checkpoint)")
    try:
        first, second = json.loads(lines[0]), json.loads(lines[1])
        header, checkpoint = first["header"], second["checkpoint"]
        after = second["after"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise JournalError(f"{path}: not a journal segment (no header and checkpoint)"
                           ) from None
    if header.get("format") not in READS:
        raise JournalError(f"{path}: journal format {header.get('format')!r}, "
                           f"this sidecar reads {', '.join(map(str, READS))}")
    segment = Segment(path, header, checkpoint, after, truncated=not complete_last)
    expected = after + 1
    for number, line in enumerate(lines[2:], start=3):
        try:
            data = json.loads(line)
            record = Record(data["seq"], data["t"], codec.decode(data["event"]), data["tr"],
                            data["fx"])
        except (json.JSONDecodeError, KeyError, TypeError, codec.CodecError) as err:
            raise JournalError(f"{path}:{number}: not a journal line ({err})") from None
        if record.seq != expected:
            raise JournalError(f"{path}:{number}: seq {record.seq} where {expected} was "
                               "expected")
        expected += 1
        segment.records.append(record)
    return segment


def load(path: str, run: int | None = None) -> Journal:
    """A segment file, or a directory (its newest run, or ``run``), as one journal."""
    # Reading creates millions of long-lived objects: without the cyclic collector
    # scanning them over and over, a 10,000-fragment journal loads about twice as fast.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(path, run)
    finally:
        if collecting:
            gc.enable()


def _load(path: str, run: int | None) -> Journal:
    if os.path.isdir(path):
        found = list_segments(path)
        if not found:
            raise JournalError(f"{path}: no journal segments (run*-seg*.jsonl) in it")
        chosen = run if run is not None else found[-1][0]
        paths = [p for r, _, p in found if r == chosen]
        if not paths:
            raise JournalError(f"{path}: no segments of run {chosen}")
    else:
        paths = [path]
    segments = [read_segment(p) for p in paths]
    for before, after in itertools.pairwise(segments):
        last = before.records[-1].seq if before.records else before.after
        if after.after != last:
            raise JournalError(f"{after.path} starts after event {after.after}, but "
                               f"{before.path} ends at event {last}")
    return Journal(segments)
