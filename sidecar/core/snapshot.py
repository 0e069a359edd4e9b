"""A complete, JSON-serialisable picture of the core's state, and the way back.

``snapshot(core)`` captures everything ``Core.handle`` depends on, so that
``Core.restore(config, snapshot(core))`` continues exactly where ``core`` is: fed the same
events with the same clock readings, both make the same transitions and effects. The
journal starts every segment with one (a checkpoint), so replay can begin at any segment,
and a restarted sidecar can later resume from one.

Pure data, no I/O. Orders that the core depends on are kept (the insertion order of the
inputs, outputs, deadlines and of the LRU output index); sets are written sorted.
``index_keys`` is not written: it is an index over ``output_index`` and rebuilt from it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict, deque
from typing import Any, Protocol, TypeVar

from states import INTAKE, IntakeState

from . import codec
from .models import CoreConfig, Input, Output, PendingPublish, Tracked
from .parts import Parts
from .protocol import LocalFile, RemoteFile, RemoteFragment

# 2: intake-control and stuck-detection state (issue 6); 3: broker_up, resume; 4: the
# intake's state (states.INTAKE) instead of its six flags. Format 3 is still read (upgrade).
FORMAT = 4

# Component attributes that are not state: the wiring (config, emitter), per-call scratch,
# and indexes rebuilt from the state on restore (index_keys, the stuck watch's _entered).
NOT_STATE = frozenset({"cfg", "fx", "out", "transitions", "index_keys", "entered",
                       "stuck_after", "step_name"})


class Composed(Protocol):
    """A core: what ``sidecar.core.Core`` is to this module (which cannot import it)."""

    @property
    def parts(self) -> Parts: ...


M = TypeVar("M", bound=Tracked)


class SnapshotError(ValueError):
    pass


# --- config ------------------------------------------------------------------------------


def config_to_json(cfg: CoreConfig) -> dict[str, Any]:
    data = dataclasses.asdict(cfg)
    data["queue_mapping"] = dict(cfg.queue_mapping)
    return data


def config_from_json(data: dict[str, Any]) -> CoreConfig:
    known = {f.name for f in dataclasses.fields(CoreConfig)}
    unknown = set(data) - known
    if unknown:
        raise SnapshotError(f"unknown config fields {sorted(unknown)}")
    return CoreConfig(**data)


# --- the core ----------------------------------------------------------------------------


def snapshot(core: Parts | Composed) -> dict[str, Any]:
    p = core if isinstance(core, Parts) else core.parts
    frags, link, step, intake, restart = p.fragments, p.link, p.step, p.intake, p.restart
    return {
        "format": FORMAT,
        "now": p.fx.now,
        "step": _tracked(step.model),
        "inputs": [_input(i) for i in frags.inputs.values()],
        "outputs": [_output(o) for o in frags.outputs.values()],
        "by_fragment": dict(frags.by_fragment),
        "publishes": [[pid, _publish(pp)] for pid, pp in p.publisher.publishes.items()],
        "ready": list(link.ready),
        "tts": list(link.tts),
        "fts": sorted(link.fts),
        "killed": sorted(link.killed),
        "kill_received": link.kill_received,
        "orphaned": link.orphaned,
        "upstream_finished": step.upstream_finished,
        "deadlines": dict(step.deadlines),
        "output_index": [[list(key), n] for key, n in p.ids.output_index.items()],
        "bucket_dirs": sorted(step.bucket_dirs),
        "counts": dict(p.fx.counts),
        "states": {name: dict(c) for name, c in frags.states.items()},
        "exit_code": step.exit_code,
        "exit_reason": step.exit_reason,
        "serial": frags.serial,
        "publish_id": p.publisher.publish_id,
        "rr": link.rr,
        "volume_free": intake.volume_free,
        "volume_low": intake.volume_low,
        "paused": list(intake.paused),
        "intake": intake.state,
        "resume_inputs": [[fid, digest, list(outs)]
                          for fid, (digest, outs) in restart.resume_inputs.items()],
        "resume_outputs": [[fid, stage, queue, codec.bytes_out(descriptor)]
                           for fid, (stage, queue, descriptor)
                           in restart.resume_outputs.items()],
        "leftovers": [[fid, list(files), list(dirs)]
                      for fid, (files, dirs) in restart.leftovers.items()],
    }


def restore_into(p: Parts, data: dict[str, Any]) -> None:
    """Give the components of a new core the state of ``data`` (any format read)."""
    data = upgrade(data)
    try:
        _restore(p, data)
    except (KeyError, TypeError, ValueError) as err:
        raise SnapshotError(f"invalid snapshot: {type(err).__name__}: {err}") from None


def _restore(p: Parts, data: dict[str, Any]) -> None:
    p.fx.now = data["now"]
    p.fx.counts = Counter(data["counts"])
    p.step.load(_restore_tracked(Tracked, data["step"]), dict(data["deadlines"]),
                data["exit_code"], data["exit_reason"], data["upstream_finished"],
                set(data["bucket_dirs"]))
    p.fragments.load([_restore_input(i) for i in data["inputs"]],
                     [_restore_output(o) for o in data["outputs"]],
                     dict(data["by_fragment"]),
                     {name: Counter(c) for name, c in data["states"].items()},
                     data["serial"])  # and the stuck watch, derived from the models
    p.publisher.load({pid: _restore_publish(pp) for pid, pp in data["publishes"]},
                     data["publish_id"])
    p.link.load(deque(data["ready"]), list(data["tts"]), set(data["fts"]),
                set(data["killed"]), data["kill_received"], data["orphaned"], data["rr"])
    p.ids.load(OrderedDict((tuple(key), n) for key, n in data["output_index"]))
    p.intake.load(_INTAKE_STATES[data["intake"]], tuple(data["paused"]),
                  data["volume_free"], data["volume_low"])
    p.restart.learn({fid: (digest, tuple(outs)) for fid, digest, outs in data["resume_inputs"]},
                    {fid: (stage, queue, codec.bytes_in(descriptor))
                     for fid, stage, queue, descriptor in data["resume_outputs"]},
                    {fid: (tuple(files), tuple(dirs)) for fid, files, dirs in data["leftovers"]})


_INTAKE_STATES = {s: s for s in INTAKE.states}  # KeyError for an unknown one
_FLAGS = ("consuming", "cancelling", "pause_cancel", "intake_ended", "broker_up", "adopting")


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` in the current format: a format-3 snapshot (a journal or a killed
    predecessor's checkpoint written before the intake machine) has its flags mapped to
    the intake state they meant."""
    if data.get("format") == FORMAT:
        return data
    if data.get("format") != 3:
        raise SnapshotError(f"snapshot format {data.get('format')!r} is not {FORMAT} (or 3)")
    try:
        new = {k: v for k, v in data.items() if k not in _FLAGS}
        new["format"] = FORMAT
        consuming, cancelling, pause_cancel, ended, up, adopting = (data[f] for f in _FLAGS)
        new["intake"] = _intake_of_flags(consuming, cancelling, pause_cancel, ended, up,
                                         adopting, data["step"]["state"])
    except (KeyError, TypeError) as err:
        raise SnapshotError(f"invalid snapshot: {type(err).__name__}: {err}") from None
    return new


def _intake_of_flags(consuming: bool, cancelling: bool, _pause_cancel: bool, ended: bool,
                     up: bool, adopting: bool, step: str) -> str:
    s = IntakeState
    if not up:
        return s.ENDED_BROKER_DOWN if ended else s.STARTING if step == "starting" \
            else s.BROKER_DOWN
    if adopting and (consuming or cancelling):
        return s.ADOPTING if consuming else s.ADOPTION_ENDING
    if ended:
        return s.ENDING if cancelling else s.ENDED
    # a cancel in flight before the end is a pause's; paused is the rest (reasons kept)
    return s.PAUSING if cancelling else s.CONSUMING if consuming else s.PAUSED


# --- the models --------------------------------------------------------------------------


def _tracked(m: Tracked) -> dict[str, Any]:
    return {"serial": m.serial, "state": m.state, "history": [[s, t] for s, t in m.history],
            "stuck_reported": m.stuck_reported}


def _restore_tracked(cls: type[M], d: dict[str, Any], **more: Any) -> M:
    return cls(serial=d["serial"], state=d["state"],
               history=[(s, t) for s, t in d["history"]],
               stuck_reported=d["stuck_reported"], **more)


def _input(i: Input) -> dict[str, Any]:
    d = _tracked(i)
    d.update(
        tag=i.tag, body=codec.bytes_out(i.body), desc=_remote_fragment(i.desc),
        paths=list(i.paths), dirs=list(i.dirs), downloads_left=i.downloads_left,
        failure=codec.encode(i.failure) if i.failure else None, conn=i.conn,
        unuploaded=sorted(i.unuploaded), unrecorded=sorted(i.unrecorded),
        taint=list(i.taint) if i.taint else None, indexed=i.indexed)
    return d


def _restore_input(d: dict[str, Any]) -> Input:
    desc = _restore_remote_fragment(d["desc"])
    return _restore_tracked(
        Input, d, tag=d["tag"], body=codec.bytes_in(d["body"]), desc=desc,
        fragment_id=desc.fragment_id if desc else "", paths=tuple(d["paths"]),
        dirs=tuple(d["dirs"]), downloads_left=d["downloads_left"],
        failure=codec.decode(d["failure"]) if d["failure"] else None, conn=d["conn"],
        unuploaded=set(d["unuploaded"]), unrecorded=set(d["unrecorded"]),
        taint=tuple(d["taint"]) if d["taint"] else None, indexed=d["indexed"])


def _output(o: Output) -> dict[str, Any]:
    d = _tracked(o)
    d.update(
        fragment_id=o.fragment_id, files=[[f.name, f.path] for f in o.files],
        remote=[[r.name, r.path, r.bucket] for r in o.remote],
        predecessors=list(o.predecessors), queue=o.queue, target_queue=o.target_queue,
        custom=o.custom, uploads_left=o.uploads_left,
        failure=codec.encode(o.failure) if o.failure else None, gates=sorted(o.gates),
        descriptor=codec.bytes_out(o.descriptor))
    return d


def _restore_output(d: dict[str, Any]) -> Output:
    return _restore_tracked(
        Output, d, fragment_id=d["fragment_id"],
        files=tuple(LocalFile(n, p) for n, p in d["files"]),
        remote=tuple(RemoteFile(n, p, b) for n, p, b in d["remote"]),
        predecessors=tuple(d["predecessors"]), queue=d["queue"],
        target_queue=d["target_queue"], custom=d["custom"], uploads_left=d["uploads_left"],
        failure=codec.decode(d["failure"]) if d["failure"] else None, gates=set(d["gates"]),
        descriptor=codec.bytes_in(d["descriptor"]))


def _remote_fragment(r: RemoteFragment | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"fragment_id": r.fragment_id, "files": [[f.name, f.path, f.bucket] for f in r.files],
            "predecessors": r.predecessors, "custom": r.custom}


def _restore_remote_fragment(d: dict[str, Any] | None) -> RemoteFragment | None:
    if d is None:
        return None
    return RemoteFragment(d["fragment_id"], tuple(RemoteFile(*f) for f in d["files"]),
                          d["predecessors"], d["custom"])


def _publish(p: PendingPublish) -> dict[str, Any]:
    return {"kind": p.kind, "owner": p.owner, "queue": p.queue, "body": codec.bytes_out(p.body),
            "message_id": p.message_id, "headers": [list(h) for h in p.headers],
            "attempt": p.attempt}


def _restore_publish(d: dict[str, Any]) -> PendingPublish:
    return PendingPublish(d["kind"], d["owner"], d["queue"], codec.bytes_in(d["body"]),
                          d["message_id"], tuple(tuple(h) for h in d["headers"]), d["attempt"])
