"""A restart on the same volume (sidecar/shell/recovery.py): inputs whose outputs a killed
predecessor already uploaded are finished without the transformation.
"""

from __future__ import annotations

import json
import posixpath

from states import INPUT, OUTPUT, InputEvent, OutputState, StepState

from . import effects as fx
from . import events as ev
from .base import CoreBase
from .models import Input, Output, PendingPublish
from .protocol import RemoteFile, encode_lineage


class ResumeRules(CoreBase):
    def _on_resume(self, e: ev.Resume) -> None:
        if self.step.state != StepState.STARTING or self.by_fragment or self.resume_inputs:
            self._log("warning", "resume-late", "resume knowledge after the start; ignored")
            return
        self.resume_inputs = {fid: (digest, tuple(outs)) for fid, digest, outs in e.inputs}
        self.resume_outputs = {fid: (stage, queue, descriptor.encode("utf-8"))
                               for fid, stage, queue, descriptor in e.outputs}
        self.leftovers = {fid: (tuple(files), tuple(dirs)) for fid, files, dirs in e.later}
        for d in (*e.delete_dirs, *(d for _, _, ds in e.later for d in ds)):
            parent = posixpath.dirname(d)
            if posixpath.dirname(parent) == self.cfg.volume.rstrip("/"):
                self.bucket_dirs.add(parent)  # <volume>/<bucket>, removed at exit if empty
        if e.delete or e.delete_dirs:
            self._emit(fx.DeleteFiles(e.delete, e.delete_dirs))
        self._log("info", "resuming",
                  f"journal run {e.run} of a killed sidecar on this volume: "
                  f"{len(self.resume_inputs)} input(s) finished with their outputs in S3 "
                  f"(republished and acked when delivered again, not processed again), "
                  f"{len(e.delete)} leftover file(s) deleted, {len(self.leftovers)} "
                  "input(s) left for the transformation")

    def _resume_input(self, inp: Input, output_ids: tuple[str, ...],
                      leftover: tuple[tuple[str, ...], tuple[str, ...]] | None) -> None:
        """done_with came before the restart and every output is uploaded: publish what was
        not confirmed (identical bytes, same message ids) and ack, without the
        transformation."""
        self._fire(INPUT, inp, InputEvent.RESUME)
        if leftover is not None:
            self._emit(fx.DeleteFiles(*leftover))
        outputs = 0
        for oid in output_ids:
            stage, queue, descriptor = self.resume_outputs.get(oid, ("recorded", "", b""))
            if stage == "recorded":
                continue
            out = next((o for o in self.outputs.values() if o.fragment_id == oid), None)
            if out is None:
                out = self._resumed_output(oid, stage, queue, descriptor)
            out.gates.add(inp.serial)
            inp.unrecorded.add(out.serial)
            if out.state == OutputState.RECEIVED:  # pragma: no cover - resumed outputs are uploaded
                inp.unuploaded.add(out.serial)
            outputs += 1
        self._log("info", "resumed", f"processed before the restart; {outputs} output(s) "
                  "to publish again, then acked", inp.fragment_id)
        self._progress(inp)

    def _resumed_output(self, oid: str, stage: str, queue: str, descriptor: bytes) -> Output:
        data = json.loads(descriptor)
        meta = data.get("metadata") or {}
        out = Output(serial=self._new_serial(), state=stage, fragment_id=oid,
                     remote=tuple(RemoteFile(f["name"], f["path"], f["bucket"])
                                  for f in data.get("files") or ()),
                     predecessors=tuple(meta.get("predecessors") or ()), queue=queue,
                     target_queue=meta.get("target_queue"), custom=meta.get("custom"),
                     descriptor=descriptor)
        self._track_new(OUTPUT, out)
        if stage == "uploaded":
            self._publish(PendingPublish("descriptor", out.serial, queue, descriptor, oid, ()))
        else:
            self._publish(PendingPublish("lineage", out.serial, self.cfg.lineage_queue,
                                         encode_lineage(self.cfg.step, descriptor), oid, ()))
        return out

    def _prune_resume_outputs(self) -> None:
        """Keep only the outputs some remembered input still names (bounded knowledge)."""
        named = {oid for _, outs in self.resume_inputs.values() for oid in outs}
        for oid in [o for o in self.resume_outputs if o not in named]:
            del self.resume_outputs[oid]
