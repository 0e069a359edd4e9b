"""Helpers for the pure unit tests: a small driver around ``sidecar.core.Core``.

The driver feeds events with a strictly increasing clock, keeps a journal of
(event, time, effects, transitions) and offers short-hands for the steps a shell or a
pyterum transformation would take. It never performs I/O.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sidecar.core import Core, CoreConfig, Input, Transition
from sidecar.core import effects as fx
from sidecar.core import events as ev

VOLUME = "/vol"
STEP = "h-step"
OUT_BUCKET = "h-step-output"
OUT_QUEUE = "h-out"
LINEAGE_QUEUE = "h-lineage"
DEAD_QUEUE = "h-in-dead"
IN_BUCKET = "h-up-output"  # the upstream step's bucket, where inputs come from
TTS, FTS = 1, 2  # the default connection ids of "the" transformation
KILL_FRAME = b'{"status":"complete"}'


def fid(ch: str) -> str:
    """A valid 64-character IterumID made of one repeated character."""
    return ch * 64


def remote_body(fragment_id: str, names: Iterable[str] = ("x.jpg",), *,
                bucket: str = IN_BUCKET, predecessors: Any = (), custom: Any = None,
                extra_meta: dict | None = None) -> bytes:
    """A RemoteFragmentDesc body as the fragmenter-sidecar / Go sidecar would publish it."""
    meta: dict[str, Any] = {"fragment_id": fragment_id,
                            "predecessors": None if predecessors is None else list(predecessors)}
    if custom is not None:
        meta["custom"] = custom
    if extra_meta:
        meta.update(extra_meta)
    files = [{"name": n, "path": f"iterum_data/{n}", "bucket": bucket} for n in names]
    return json.dumps({"files": files, "metadata": meta}).encode()


def pyterum_output(predecessors: Iterable[str], files: Iterable[tuple[str, str]], *,
                   output_channel: str | None = None, custom: Any = None) -> bytes:
    """Exactly what pyterum 0.6.6 ``TransformationStepOutput.produce`` sends (§4.7)."""
    return json.dumps({
        "files": [{"name": n, "path": p} for n, p in files],
        "metadata": {"output_channel": output_channel, "custom": custom,
                     "fragment_id": None, "predecessors": list(predecessors)},
    }).encode()


def done_with(fragment_id: str) -> bytes:
    return json.dumps({"fragment_id": fragment_id}).encode()


def of(effects: Iterable[fx.Effect], *kinds: type) -> list:
    return [e for e in effects if isinstance(e, kinds)]


def log_codes(effects: Iterable[fx.Effect]) -> list[str]:
    return [e.code for e in of(effects, fx.Log)]


def without_logs(effects: Iterable[fx.Effect]) -> list[fx.Effect]:
    return [e for e in effects if not isinstance(e, fx.Log)]


def make_config(**overrides: Any) -> CoreConfig:
    values: dict[str, Any] = dict(
        volume=VOLUME, step=STEP, output_bucket=OUT_BUCKET, output_queue=OUT_QUEUE,
        lineage_queue=LINEAGE_QUEUE, dead_letter_queue=DEAD_QUEUE, prefetch=4,
        queue_mapping={"rejects": "h-rejects"})
    values.update(overrides)
    return CoreConfig(**values)


class Driver:
    """Feeds events into a fresh Core and remembers everything that came out."""

    def __init__(self, **overrides: Any):
        self.core = Core(make_config(**overrides))
        self.clock = 0.0
        self.journal: list[tuple[ev.Event, float, list[fx.Effect], list[Transition]]] = []
        self.inputs: dict[str, Input] = {}  # fragment id -> its latest Input model
        self.observers: list = []  # called like the Runner's (e.g. a journal Recorder)

    # --- raw feeding -------------------------------------------------------------------

    def feed(self, event: ev.Event, at: float | None = None) -> list[fx.Effect]:
        if at is None:
            at = self.clock + 0.001
        assert at >= self.clock, "the clock must not run backwards"
        self.clock = at
        before = set(self.core.inputs)
        out = self.core.handle(event, at)
        self.journal.append((event, at, list(out), list(self.core.transitions)))
        for observer in self.observers:
            observer(event, at, out, self.core.transitions)
        for serial in set(self.core.inputs) - before:
            model = self.core.inputs[serial]
            if model.indexed:  # the copy that owns its fragment id (not a duplicate)
                self.inputs[model.fragment_id] = model
        return out

    def after(self, seconds: float, event: ev.Event | None = None) -> list[fx.Effect]:
        return self.feed(event or ev.Tick(), at=self.clock + seconds)

    @property
    def effects(self) -> list[fx.Effect]:
        return [e for _, _, out, _ in self.journal for e in out]

    @property
    def transitions(self) -> list[Transition]:
        return [t for _, _, _, ts in self.journal for t in ts]

    # --- the broker side ---------------------------------------------------------------

    def start(self) -> list[fx.Effect]:
        return self.feed(ev.BrokerReady())

    def deliver(self, tag: int, body: bytes, redelivered: bool = False) -> list[fx.Effect]:
        return self.feed(ev.Delivered(tag, body, redelivered))

    def deliver_fragment(self, tag: int, fragment_id: str, names: Iterable[str] = ("x.jpg",),
                         **kw: Any) -> list[fx.Effect]:
        return self.deliver(tag, remote_body(fragment_id, names, **kw))

    def confirm(self, publish: fx.Publish) -> list[fx.Effect]:
        return self.feed(ev.PublishConfirmed(publish.publish_id))

    def reject(self, publish: fx.Publish, reason: str = "nack") -> list[fx.Effect]:
        return self.feed(ev.PublishRejected(publish.publish_id, reason))

    # --- storage -----------------------------------------------------------------------

    def downloads_of(self, fragment_id: str) -> list[fx.DownloadFile]:
        serial = self.inputs[fragment_id].serial
        return [d for d in of(self.effects, fx.DownloadFile) if d.input_id == serial]

    def download(self, fragment_id: str) -> list[fx.Effect]:
        """Complete every download of the input with this id; return all effects."""
        out: list[fx.Effect] = []
        for d in self.downloads_of(fragment_id):
            out += self.feed(ev.FileDownloaded(d.input_id, d.index, size=100))
        return out

    def upload(self, uploads: Iterable[fx.Effect]) -> list[fx.Effect]:
        out: list[fx.Effect] = []
        for u in of(uploads, fx.UploadFile):
            out += self.feed(ev.FileUploaded(u.output_id, u.index, size=10))
        return out

    def record(self, uploads: Iterable[fx.Effect]) -> list[fx.Effect]:
        """Upload an output's files, then confirm its descriptor and its lineage publish."""
        out = self.upload(uploads)
        for p in of(out, fx.Publish):
            step = self.confirm(p)
            out += step
            for lineage in of(step, fx.Publish):
                out += self.confirm(lineage)
        return out

    # --- the transformation ------------------------------------------------------------

    def connect(self, tts: int = TTS, fts: int = FTS) -> list[fx.Effect]:
        return self.feed(ev.Connected(tts, "tts")) + self.feed(ev.Connected(fts, "fts"))

    def disconnect(self, tts: int = TTS, fts: int = FTS) -> list[fx.Effect]:
        return self.feed(ev.Disconnected(tts, "tts")) + self.feed(ev.Disconnected(fts, "fts"))

    def frame(self, payload: bytes, conn: int = FTS) -> list[fx.Effect]:
        return self.feed(ev.FrameReceived(conn, payload))

    def output(self, predecessors: Iterable[str], names: Iterable[str] = ("o.jpg",),
               conn: int = FTS, **kw: Any) -> list[fx.Effect]:
        files = [(n, f"{VOLUME}/output/{n}") for n in names]
        return self.frame(pyterum_output(predecessors, files, **kw), conn)

    def done(self, fragment_id: str, conn: int = FTS) -> list[fx.Effect]:
        return self.frame(done_with(fragment_id), conn)

    def kill(self, conn: int = FTS) -> list[fx.Effect]:
        return self.frame(KILL_FRAME, conn)

    def ready_input(self, tag: int, fragment_id: str, **kw: Any) -> list[fx.Effect]:
        """Deliver and download one fragment (it is dispatched if a tts connection exists)."""
        return self.deliver_fragment(tag, fragment_id, **kw) + self.download(fragment_id)

    def end_input(self) -> list[fx.Effect]:
        """The §12 chain up to the consumer being stopped: upstream done, queue empty."""
        out = self.feed(ev.UpstreamFinished())
        out += self.feed(ev.QueueInspected(0))
        out += self.feed(ev.ConsumerStopped())
        return out

    # --- questions ---------------------------------------------------------------------

    def state(self, fragment_id: str) -> str:
        return self.inputs[fragment_id].state

    def history(self, fragment_id: str) -> list[str]:
        return [s for s, _ in self.inputs[fragment_id].history]

    def assert_files_deleted_once(self, left: Iterable[str] = (),
                                  also: Iterable[str] = ()) -> None:
        """Every local file the sidecar downloaded, or was asked to upload, is deleted
        exactly once over the run. ``left``: files that are knowingly kept; ``also``: files
        of refused outputs (never uploaded) that must be deleted once as well."""
        made = Counter(d.dest for d in of(self.effects, fx.DownloadFile))
        made += Counter(u.source for u in of(self.effects, fx.UploadFile))
        made += Counter(also)
        made -= Counter(left)
        deleted = Counter(p for d in of(self.effects, fx.DeleteFiles) for p in d.paths)
        assert deleted == made
