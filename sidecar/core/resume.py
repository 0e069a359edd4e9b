"""A restart on the same volume (sidecar/shell/recovery.py): inputs whose outputs a killed
predecessor already uploaded are finished without the transformation.
"""

from __future__ import annotations

import json
import posixpath

from states import INPUT, OUTPUT, InputEvent, OutputState, StepState

from . import effects as fx
from . import events as ev
from .inputs import progress
from .models import Input, Output, PendingPublish
from .parts import Parts
from .protocol import RemoteFile, encode_lineage


def on_resume(p: Parts, e: ev.Resume) -> None:
    if p.step.state != StepState.STARTING or p.fragments.by_fragment or p.restart.resume_inputs:
        p.fx.log("warning", "resume-late", "resume knowledge after the start; ignored")
        return
    p.restart.learn({fid: (digest, tuple(outs)) for fid, digest, outs in e.inputs},
                    {fid: (stage, queue, descriptor.encode("utf-8"))
                     for fid, stage, queue, descriptor in e.outputs},
                    {fid: (tuple(files), tuple(dirs)) for fid, files, dirs in e.later})
    volume = p.cfg.volume.rstrip("/")
    for d in (*e.delete_dirs, *(d for _, _, ds in e.later for d in ds)):
        parent = posixpath.dirname(d)
        if posixpath.dirname(parent) == volume:
            p.step.add_bucket_dirs((parent,))  # <volume>/<bucket>, removed at exit if empty
    if e.delete or e.delete_dirs:
        p.fx.emit(fx.DeleteFiles(e.delete, e.delete_dirs))
    p.fx.log("info", "resuming",
             f"journal run {e.run} of a killed sidecar on this volume: "
             f"{len(p.restart.resume_inputs)} input(s) finished with their outputs in S3 "
             f"(republished and acked when delivered again, not processed again), "
             f"{len(e.delete)} leftover file(s) deleted, {len(p.restart.leftovers)} "
             "input(s) left for the transformation")


def resume_input(p: Parts, inp: Input, output_ids: tuple[str, ...],
                 leftover: tuple[tuple[str, ...], tuple[str, ...]] | None) -> None:
    """done_with came before the restart and every output is uploaded: publish what was
    not confirmed (identical bytes, same message ids) and ack, without the
    transformation."""
    p.fragments.fire(INPUT, inp, InputEvent.RESUME)
    if leftover is not None:
        p.fx.emit(fx.DeleteFiles(*leftover))
    outputs = 0
    for oid in output_ids:
        stage, queue, descriptor = p.restart.output(oid) or ("recorded", "", b"")
        if stage == "recorded":
            continue
        out = p.fragments.output_named(oid)
        if out is None:
            out = _resumed_output(p, oid, stage, queue, descriptor)
        out.gates.add(inp.serial)
        inp.unrecorded.add(out.serial)
        if out.state == OutputState.RECEIVED:  # pragma: no cover - resumed outputs are uploaded
            inp.unuploaded.add(out.serial)
        outputs += 1
    p.fx.log("info", "resumed", f"processed before the restart; {outputs} output(s) "
             "to publish again, then acked", inp.fragment_id)
    progress(p, inp)


def _resumed_output(p: Parts, oid: str, stage: str, queue: str, descriptor: bytes) -> Output:
    data = json.loads(descriptor)
    meta = data.get("metadata") or {}
    out = Output(serial=p.fragments.new_serial(), state=stage, fragment_id=oid,
                 remote=tuple(RemoteFile(f["name"], f["path"], f["bucket"])
                              for f in data.get("files") or ()),
                 predecessors=tuple(meta.get("predecessors") or ()), queue=queue,
                 target_queue=meta.get("target_queue"), custom=meta.get("custom"),
                 descriptor=descriptor)
    p.fragments.add(OUTPUT, out)
    if stage == "uploaded":
        p.publish(PendingPublish("descriptor", out.serial, queue, descriptor, oid, ()))
    else:
        p.publish(PendingPublish("lineage", out.serial, p.cfg.lineage_queue,
                                 encode_lineage(p.cfg.step, descriptor), oid, ()))
    return out
