"""The core's data: its configuration and the models its state machines advance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from states import INPUT, INTAKE, OUTPUT, InputState

from . import events as ev
from .protocol import KILL, RemoteFile, RemoteFragment, dumps

KILL_FRAME = dumps(KILL)
OUTPUT_INDEX_LIMIT = 100_000  # predecessor sets whose output count is remembered (LRU)
EXIT_OK, EXIT_FATAL, EXIT_TRANSFORMATION = 0, 1, 3
_PRE_DISPATCH = (InputState.RECEIVED, InputState.DOWNLOADED)
_UNPROCESSED = (*_PRE_DISPATCH, InputState.DISPATCHED)  # no done_with yet


@dataclass(frozen=True)
class CoreConfig:
    """The settings the decisions depend on (recorded in a journal's header)."""

    volume: str
    step: str
    output_bucket: str
    output_queue: str
    lineage_queue: str
    dead_letter_queue: str
    prefetch: int
    queue_mapping: Mapping[str, str] = field(default_factory=dict)
    object_layout: str = "per-fragment"
    transformation_grace: float = 60.0
    # seconds from BrokerReady until the transformation's first connection; 0: no limit
    transformation_connect_timeout: float = 0.0
    shutdown_grace: float = 20.0
    queue_poll_interval: float = 1.0
    publish_attempts: int = 5
    # Operations (docs/operations.md). The defaults here switch the rules off; the
    # settings switch them on in production.
    stuck_after: float = 0.0  # seconds in one state before a fragment is reported stuck
    volume_min_free: int = 0  # bytes; below this, intake pauses (resumes at +25%)
    pause_when_orphaned: bool = False  # pause intake while the transformation is gone

    def object_key(self, fragment_id: str, name: str) -> str:
        if self.object_layout == "flat":
            return f"iterum_data/{name}"
        return f"iterum_data/{fragment_id}/{name}"


@dataclass(eq=False, slots=True)
class Intake:
    """The model of ``states.INTAKE``. No history (pauses and reconnects would grow it
    without bound) and no transitions in the journal: its state is in every checkpoint,
    and what it does (StartConsuming, StopConsuming) is in the recorded effects."""

    state: str = INTAKE.initial


@dataclass(eq=False, slots=True)
class Tracked:
    """Common to the three kinds of state-machine models."""

    serial: int
    state: str
    history: list[tuple[str, float]] = field(default_factory=list)
    stuck_reported: int = 0  # len(history) when last reported stuck: once per state entry


@dataclass(eq=False, slots=True)
class Input(Tracked):
    tag: int = 0
    body: bytes = b""
    desc: RemoteFragment | None = None
    paths: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    downloads_left: int = 0
    failure: ev.DownloadFailed | None = None
    conn: int | None = None
    unuploaded: set[int] = field(default_factory=set)  # gating outputs not yet in S3
    unrecorded: set[int] = field(default_factory=set)  # gating outputs not yet confirmed
    taint: tuple[str, str, bool] | None = None  # reason, detail, transient
    indexed: bool = False  # this input owns by_fragment[fragment_id]
    # desc.fragment_id ("" without desc), set with it: read on every transition, where a
    # property would cost a call
    fragment_id: str = ""


@dataclass(eq=False, slots=True)
class Output(Tracked):
    fragment_id: str = ""
    files: tuple[Any, ...] = ()
    remote: tuple[RemoteFile, ...] = ()
    predecessors: tuple[str, ...] = ()
    queue: str = ""
    target_queue: str | None = None
    custom: Any = None
    uploads_left: int = 0
    failure: ev.UploadFailed | None = None
    gates: set[int] = field(default_factory=set)  # inputs whose ack waits for this output
    descriptor: bytes = b""


class Transition(NamedTuple):
    """One state change, as the journal and the metrics see it.

    A named tuple, not a frozen dataclass: one is made per transition on the loop thread,
    and a frozen dataclass's ``__init__`` costs about three times as much.
    """

    machine: str
    serial: int
    fragment: str
    trigger: str
    source: str
    dest: str


class PendingPublish(NamedTuple):
    """A named tuple (see ``Transition``): two are made for every output."""

    kind: str  # "descriptor", "lineage" or "dead_letter"
    owner: int
    queue: str
    body: bytes
    message_id: str | None
    headers: tuple[tuple[str, str], ...]
    attempt: int = 1


def _terminal(model: Input | Output) -> bool:
    return model.state in (INPUT.terminal if isinstance(model, Input) else OUTPUT.terminal)
