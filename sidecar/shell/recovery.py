"""A restart on the same volume: what the killed predecessor had done, from its journal.

A sidecar killed (SIGKILL, OOM, a node hiccup) and started again on the same volume (a
container restart: the pod and its emptyDir stay) finds the previous process's journal in
``<volume>/.sidecar/journal``. ``recover`` rebuilds that process's core at the last event
it recorded (the newest segment's checkpoint plus its events, as replay does) and derives
``ev.Resume``, which the new core consumes as its first event, so that the new run's own
journal still replays:

* **inputs to resume**: those whose ``done_with`` had come and whose outputs were all
  uploaded (their objects are in S3): when the broker delivers one again (it was never
  acked), the new core publishes the descriptors and lineage not yet confirmed (the same
  bytes, the same message ids) and acks, without the transformation. Everything else is
  processed again, with the same output ids by construction (§16.15);
* **files to delete**: the outputs' local files (the transformation wrote them and sent
  their frames; they are uploaded again when their input is processed again, or were
  uploaded already); the inputs' downloads are deleted when the input ends unless the
  input is delivered here again, because a transformation that outlived the sidecar may
  still be reading one.

The journal is flushed a few times a second and a killed process loses what it had not
flushed, so the knowledge is of a moment shortly before the kill. That is safe: every fact
used ("done_with came", "this object was uploaded with this descriptor") stays true later.

Anything unusable (no journal, a torn or foreign segment, another step, queue or version,
a run that ended normally) means starting fresh, with one log line; never a failed start.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath

from ..core import Core, CoreConfig
from ..core import events as ev
from ..core.protocol import inside
from ..core.snapshot import SnapshotError, config_from_json
from .hooks import Loop
from .journal import JournalError, Recorder, list_segments, load

log = logging.getLogger("sidecar.resume")
journal_log = logging.getLogger("sidecar.journal")
# Settings that must be equal for a predecessor's outputs to be this run's outputs.
SAME = ("volume", "step", "output_bucket", "output_queue", "lineage_queue",
        "dead_letter_queue", "object_layout", "queue_mapping")


def recover(directory: str, cfg: CoreConfig) -> ev.Resume | None:
    """The Resume event for a restart in ``directory``'s journal, or None (start fresh)."""
    try:
        found = list_segments(directory)
    except OSError as err:
        log.warning("resume: cannot read %s (%s); starting fresh", directory, err)
        return None
    for run in sorted({r for r, _, _ in found}, reverse=True):
        paths = [p for r, _, p in found if r == run]
        dead = _rebuild(paths, run, cfg)
        if dead is None:
            return None
        if isinstance(dead, str):  # "empty": killed before it recorded anything: its
            continue  # predecessor counts
        if dead.step.state == "exited":
            log.info("resume: the previous run (%d) ended normally; nothing to resume", run)
            return None
        event = knowledge(dead, run)
        log.info("resume: run %d was killed: %d input(s) to resume if delivered again, "
                 "%d leftover file(s) to delete, %d input(s) left for the transformation",
                 run, len(event.inputs), len(event.delete), len(event.later))
        return event
    return None


def _rebuild(paths: list[str], run: int, cfg: CoreConfig) -> Core | str | None:
    """The core of run ``run`` at its last recorded event; "empty" if it recorded none;
    None if the journal cannot be used."""
    for path in reversed(paths):  # the newest readable segment; an older one is a prefix
        try:
            journal = load(path)
        except JournalError as err:
            log.warning("resume: %s", err)
            continue
        segment = journal.segments[0]
        if segment.after == 0 and not segment.records:
            return "empty"
        try:
            theirs = config_from_json(segment.header["config"])
        except (SnapshotError, KeyError, TypeError) as err:
            log.warning("resume: %s has no usable config (%s); starting fresh", path, err)
            return None
        differs = [f for f in SAME if getattr(theirs, f) != getattr(cfg, f)]
        if differs:
            log.warning("resume: the journal in %s is of another step or queue (%s differ); "
                        "starting fresh", posixpath.dirname(path), ", ".join(differs))
            return None
        try:
            core = Core.restore(theirs, segment.checkpoint)
            for record in segment.records:
                core.handle(record.event, record.t)
        except Exception as err:  # a foreign or damaged journal: start fresh
            log.warning("resume: cannot rebuild run %d from %s (%s: %s); starting fresh",
                        run, path, type(err).__name__, err)
            return None
        return core
    log.warning("resume: no readable segment of run %d; starting fresh", run)
    return None


def knowledge(dead: Core, run: int) -> ev.Resume:
    """What the new core needs to know of ``dead`` (pure; see the module docstring)."""
    live = {o.fragment_id: o for o in dead.outputs.values()}

    def stage(oid: str) -> str:
        out = live.get(oid)
        if out is not None:
            return out.state  # received, uploaded or published (recorded ones are gone)
        return dead.resume_outputs.get(oid, ("unknown", "", b""))[0]

    def describe(oid: str) -> tuple[str, str, str, str]:
        out = live.get(oid)
        if out is not None:
            return oid, out.state, out.queue, out.descriptor.decode("utf-8")
        known_stage, queue, descriptor = dead.resume_outputs[oid]
        return oid, known_stage, queue, descriptor.decode("utf-8")

    inputs: dict[str, tuple[str, tuple[str, ...]]] = {}
    candidates: list[tuple[str, str, list[str]]] = [
        (fid, digest, list(outs)) for fid, (digest, outs) in dead.resume_inputs.items()]
    for inp in dead.inputs.values():
        if (inp.indexed and inp.taint is None and inp.desc is not None
                and inp.state in ("processed", "uploaded", "published")):
            outs = [o.fragment_id for o in dead.outputs.values()
                    if inp.fragment_id in o.predecessors]
            candidates.append((inp.fragment_id, hashlib.sha256(inp.body).hexdigest(), outs))
    for fid, digest, outs in candidates:
        pending = [o for o in outs if stage(o) != "recorded"]
        if all(stage(o) in ("uploaded", "published") for o in pending):
            inputs[fid] = (digest, tuple(pending))
    named = sorted({o for _, outs in inputs.values() for o in outs})

    delete: list[str] = []
    for out in dead.outputs.values():
        delete += [f.path for f in out.files if inside(dead.cfg.volume, f.path)]
    later: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = dict(dead.leftovers)
    for inp in dead.inputs.values():
        if inp.paths:  # downloaded (or downloading: a .part file) and not yet deleted
            files = tuple(inp.paths) + tuple(f"{p}.part" for p in inp.paths)
            later[inp.fragment_id] = (files, tuple(inp.dirs))
    return ev.Resume(
        run=run,
        inputs=tuple((fid, digest, outs) for fid, (digest, outs) in inputs.items()),
        outputs=tuple(describe(oid) for oid in named),
        delete=tuple(dict.fromkeys(delete)),
        later=tuple((fid, files, dirs) for fid, (files, dirs) in later.items()))


class Journal(Recorder):
    """The Runner's journal (an observer, built only when SIDECAR_JOURNAL is on): at the
    start it reads what a killed predecessor on this volume had done, then opens this run's
    journal and feeds the Resume as the run's first event, so the new journal hands it on
    even if this run is killed at once. Nothing touches the disk before ``start``."""

    def __init__(self, directory: str, core: Core, *, max_bytes: int, keep: int):
        super().__init__(directory, core, max_bytes=max_bytes, keep=keep, begin=False)

    def start(self, loop: Loop) -> None:
        resume = recover(self.directory, self.core.cfg)  # before this run's segment exists
        self.loop = loop  # the flush timer
        try:
            self.begin()
        except OSError as err:  # the sidecar runs on, unrecorded
            journal_log.warning("journal: cannot use %s (%s); running without a journal",
                                self.directory, err)
        if self.active:
            journal_log.info("journal: recording to %s", self.path)
        if resume is not None:
            loop.feed(resume)
            self.flush()

    def exiting(self) -> None:
        self.flush()

    def stop(self) -> None:
        self.close()
