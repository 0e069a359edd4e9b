"""A complete, JSON-serialisable picture of the core's state, and the way back.

``snapshot(core)`` captures everything ``Core.handle`` depends on, so that
``restore(config, snapshot(core))`` continues exactly where ``core`` is: fed the same
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
from typing import Any

from states import INTAKE, IntakeState

from . import Core, CoreConfig, Input, Output, PendingPublish, Tracked, codec
from .models import Intake
from .protocol import LocalFile, RemoteFile, RemoteFragment

# 2: intake-control and stuck-detection state (issue 6); 3: broker_up, resume; 4: the
# intake's state (states.INTAKE) instead of its six flags. Format 3 is still read (upgrade).
FORMAT = 4

# Core attributes that are not state: the config (written separately), per-call scratch,
# and indexes rebuilt from the state on restore (index_keys, the stuck watch's _entered).
NOT_STATE = frozenset({"cfg", "_out", "transitions", "_handlers", "index_keys", "_entered"})


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


def snapshot(core: Core) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "now": core.now,
        "step": _tracked(core.step),
        "inputs": [_input(i) for i in core.inputs.values()],
        "outputs": [_output(o) for o in core.outputs.values()],
        "by_fragment": dict(core.by_fragment),
        "publishes": [[pid, _publish(p)] for pid, p in core.publishes.items()],
        "ready": list(core.ready),
        "tts": list(core.tts),
        "fts": sorted(core.fts),
        "killed": sorted(core.killed),
        "kill_received": core.kill_received,
        "orphaned": core.orphaned,
        "upstream_finished": core.upstream_finished,
        "deadlines": dict(core.deadlines),
        "output_index": [[list(key), n] for key, n in core.output_index.items()],
        "bucket_dirs": sorted(core.bucket_dirs),
        "counts": dict(core.counts),
        "states": {name: dict(c) for name, c in core.states.items()},
        "exit_code": core.exit_code,
        "exit_reason": core.exit_reason,
        "serial": core._serial,
        "publish_id": core._publish_id,
        "rr": core._rr,
        "volume_free": core.volume_free,
        "volume_low": core.volume_low,
        "paused": list(core.paused),
        "intake": core.intake.state,
        "resume_inputs": [[fid, digest, list(outs)]
                          for fid, (digest, outs) in core.resume_inputs.items()],
        "resume_outputs": [[fid, stage, queue, codec.bytes_out(descriptor)]
                           for fid, (stage, queue, descriptor) in core.resume_outputs.items()],
        "leftovers": [[fid, list(files), list(dirs)]
                      for fid, (files, dirs) in core.leftovers.items()],
    }


def restore(config: CoreConfig, data: dict[str, Any]) -> Core:
    data = upgrade(data)
    core = Core(config)
    try:
        core.now = data["now"]
        core.step = _restore_tracked(Tracked, data["step"])
        core.inputs = {i.serial: i for i in map(_restore_input, data["inputs"])}
        core.outputs = {o.serial: o for o in map(_restore_output, data["outputs"])}
        core.by_fragment = dict(data["by_fragment"])
        core.publishes = {pid: _restore_publish(p) for pid, p in data["publishes"]}
        core.ready = deque(data["ready"])
        core.tts = list(data["tts"])
        core.fts = set(data["fts"])
        core.killed = set(data["killed"])
        core.kill_received = data["kill_received"]
        core.orphaned = data["orphaned"]
        core.upstream_finished = data["upstream_finished"]
        core.deadlines = dict(data["deadlines"])
        core.output_index = OrderedDict((tuple(key), n) for key, n in data["output_index"])
        core.index_keys = rebuild_index_keys(core.output_index)
        core.bucket_dirs = set(data["bucket_dirs"])
        core.counts = Counter(data["counts"])
        core.states = {name: Counter(c) for name, c in data["states"].items()}
        core.exit_code = data["exit_code"]
        core.exit_reason = data["exit_reason"]
        core._serial = data["serial"]
        core._publish_id = data["publish_id"]
        core._rr = data["rr"]
        core.volume_free = data["volume_free"]
        core.volume_low = data["volume_low"]
        core.paused = tuple(data["paused"])
        core.intake = Intake(_INTAKE_STATES[data["intake"]])
        core.resume_inputs = {fid: (digest, tuple(outs))
                              for fid, digest, outs in data["resume_inputs"]}
        core.resume_outputs = {fid: (stage, queue, codec.bytes_in(descriptor))
                               for fid, stage, queue, descriptor in data["resume_outputs"]}
        core.leftovers = {fid: (tuple(files), tuple(dirs))
                          for fid, files, dirs in data["leftovers"]}
        core.rebuild_stuck_watch()  # derived from the models, like index_keys
    except (KeyError, TypeError, ValueError) as err:
        raise SnapshotError(f"invalid snapshot: {type(err).__name__}: {err}") from None
    return core


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
        new["intake"] = _intake_of_flags(*(data[f] for f in _FLAGS), data["step"]["state"])
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


def rebuild_index_keys(output_index: OrderedDict[tuple[str, ...], int]
                       ) -> dict[str, set[tuple[str, ...]]]:
    keys: dict[str, set[tuple[str, ...]]] = {}
    for key in output_index:
        for p in set(key):
            keys.setdefault(p, set()).add(key)
    return keys


# --- the models --------------------------------------------------------------------------


def _tracked(m: Tracked) -> dict[str, Any]:
    return {"serial": m.serial, "state": m.state, "history": [[s, t] for s, t in m.history],
            "stuck_reported": m.stuck_reported}


def _restore_tracked(cls: type, d: dict[str, Any], **more: Any) -> Any:
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
    return _restore_tracked(
        Input, d, tag=d["tag"], body=codec.bytes_in(d["body"]),
        desc=_restore_remote_fragment(d["desc"]), paths=tuple(d["paths"]),
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
