"""Output fragments: validation, deterministic ids (§16.15), gating, uploads, and the
confirms of their descriptor and lineage.
"""

from __future__ import annotations

from states import INPUT, OUTPUT, InputEvent, OutputEvent, OutputState

from . import effects as fx
from . import events as ev
from .base import CoreBase
from .models import _UNPROCESSED, OUTPUT_INDEX_LIMIT, Input, Output, PendingPublish
from .protocol import OutputFragment, RemoteFile, encode_lineage, encode_remote, inside, output_id


class OutputRules(CoreBase):
    def _on_output(self, msg: OutputFragment) -> None:
        out = Output(serial=self._new_serial(), state=OUTPUT.initial, files=msg.files,
                     predecessors=msg.predecessors, custom=msg.custom,
                     fragment_id=self._next_output_id(msg.predecessors))
        self._track_new(OUTPUT, out)
        self._gate(out)
        problem = self._output_problem(msg)
        if problem:
            self._fail_output(out, "invalid-output", problem, transient=False)
            return
        if not msg.predecessors_given:
            self._log("warning", "output-without-predecessors",
                      "output names no predecessors; published with predecessors []",
                      out.fragment_id)
        out.target_queue = self.cfg.queue_mapping.get(msg.output_channel or "")
        out.queue = out.target_queue or self.cfg.output_queue
        out.remote = tuple(RemoteFile(f.name, self.cfg.object_key(out.fragment_id, f.name),
                                      self.cfg.output_bucket) for f in msg.files)
        out.uploads_left = len(msg.files)
        for i, (f, r) in enumerate(zip(msg.files, out.remote, strict=True)):
            self._emit(fx.UploadFile(out.serial, i, r.bucket, r.path, f.path))

    def _output_problem(self, msg: OutputFragment) -> str:
        if msg.problem:
            return msg.problem
        for f in msg.files:
            if not inside(self.cfg.volume, f.path):
                return f"output file {f.path!r} is not inside the data volume"
        if msg.output_channel and msg.output_channel not in self.cfg.queue_mapping:
            return (f"output_channel {msg.output_channel!r} is not in "
                    "ITERUM_CONFIG.queue_mapping")
        return ""

    def _next_output_id(self, predecessors: tuple[str, ...]) -> str:
        """§16.15: the index counts outputs with these predecessors since they were delivered.

        It restarts only when a predecessor is delivered (or re-dispatched) again, so a late
        output (after done_with, even after the ack) never reuses an earlier output's id.
        """
        key = tuple(sorted(predecessors))
        index = self.output_index.pop(key, 0)
        self.output_index[key] = index + 1
        for p in set(key):
            self.index_keys.setdefault(p, set()).add(key)
        if len(self.output_index) > OUTPUT_INDEX_LIMIT:
            self._drop_index_key(next(iter(self.output_index)))
        return output_id(self.cfg.step, list(predecessors), index)

    def _reset_output_index(self, fragment_id: str) -> None:
        for key in list(self.index_keys.get(fragment_id, ())):
            self._drop_index_key(key)

    def _drop_index_key(self, key: tuple[str, ...]) -> None:
        self.output_index.pop(key, None)
        for p in set(key):
            keys = self.index_keys.get(p)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.index_keys[p]

    def _gate(self, out: Output) -> None:
        """§16.8: an output received before its predecessor's done_with holds that ack."""
        for p in set(out.predecessors):
            inp = self.inputs.get(self.by_fragment.get(p, -1))
            if inp is not None and inp.state in _UNPROCESSED:
                out.gates.add(inp.serial)
                inp.unuploaded.add(out.serial)
                inp.unrecorded.add(out.serial)

    def _on_uploaded(self, e: ev.FileUploaded) -> None:
        out = self.outputs.get(e.output_id)
        if out is not None:
            out.uploads_left -= 1
            self._uploads_settled(out)

    def _on_upload_failed(self, e: ev.UploadFailed) -> None:
        out = self.outputs.get(e.output_id)
        if out is not None:
            out.uploads_left -= 1
            out.failure = out.failure or e
            self._uploads_settled(out)

    def _uploads_settled(self, out: Output) -> None:
        if out.uploads_left > 0:
            return
        if out.failure is not None:
            f = out.failure
            self._fail_output(out, f.reason, f"upload failed: {f.error} "
                              f"(after {f.attempts} attempts)", f.transient)
            return
        self._fire(OUTPUT, out, OutputEvent.UPLOAD_DONE)
        self._emit(fx.DeleteFiles(tuple(f.path for f in out.files)))
        for inp in self._gated(out):
            inp.unuploaded.discard(out.serial)
            self._progress(inp)
        out.descriptor = encode_remote(out.fragment_id, list(out.remote),
                                       list(out.predecessors), out.target_queue, out.custom)
        self._publish(PendingPublish("descriptor", out.serial, out.queue, out.descriptor,
                                     out.fragment_id, ()))

    def _fail_output(self, out: Output, reason: str, detail: str, transient: bool) -> None:
        files_local = out.state == OutputState.RECEIVED  # deleted on upload_done otherwise
        self._fire(OUTPUT, out, OutputEvent.FAIL)
        gated = self._gated(out)
        if gated:
            # The inputs are kept (requeued or dead-lettered), so the output can be made
            # again: its local files need not stay behind.
            self._log("error", f"output-{reason}", detail + "; its inputs will be "
                      + ("requeued" if transient else "dead-lettered"), out.fragment_id)
            inside_volume = [f.path for f in out.files if inside(self.cfg.volume, f.path)]
            if files_local and inside_volume:
                self._emit(fx.DeleteFiles(tuple(inside_volume)))
        else:
            where = ("its files are left on the volume" if files_local else
                     f"its objects are in bucket {self.cfg.output_bucket}")
            self._log("error", "output-lost", f"{detail}; no input waits for it (done_with "
                      f"came first), so it cannot be made again: {where}", out.fragment_id)
        for inp in gated:
            inp.taint = inp.taint or (reason, detail, transient)
            inp.unuploaded.discard(out.serial)
            inp.unrecorded.discard(out.serial)
            self._progress(inp)
        self._forget(out)

    def _gated(self, out: Output) -> list[Input]:
        return [i for s in sorted(out.gates) if (i := self.inputs.get(s)) is not None]

    def _on_confirmed(self, e: ev.PublishConfirmed) -> None:
        pending = self.publishes.pop(e.publish_id, None)
        if pending is None:
            return
        if pending.kind == "dead_letter":
            inp = self.inputs[pending.owner]
            if inp.tag:
                self._emit(fx.Ack(inp.tag))
            self._fire(INPUT, inp, InputEvent.DEAD_LETTER_CONFIRMED)
            self._maybe_forget(inp)
            return
        out = self.outputs[pending.owner]
        if pending.kind == "descriptor":
            self._fire(OUTPUT, out, OutputEvent.PUBLISH_CONFIRMED)
            self._publish(PendingPublish("lineage", out.serial, self.cfg.lineage_queue,
                                         encode_lineage(self.cfg.step, out.descriptor),
                                         out.fragment_id, ()))
            return
        self._fire(OUTPUT, out, OutputEvent.LINEAGE_CONFIRMED)
        known = self.resume_outputs.get(out.fragment_id)
        if known is not None:
            self.resume_outputs[out.fragment_id] = ("recorded", known[1], b"")
        for inp in self._gated(out):
            inp.unrecorded.discard(out.serial)
            self._progress(inp)
        self._forget(out)

    def _on_rejected(self, e: ev.PublishRejected) -> None:
        pending = self.publishes.pop(e.publish_id, None)
        if pending is None:
            return
        if pending.attempt < self.cfg.publish_attempts:
            self._log("warning", "publish-refused",
                      f"broker refused a {pending.kind} publish ({e.reason}); retrying")
            self._publish(PendingPublish(pending.kind, pending.owner, pending.queue,
                                         pending.body, pending.message_id, pending.headers,
                                         pending.attempt + 1))
            return
        detail = f"broker refused the {pending.kind} {pending.attempt} times ({e.reason})"
        if pending.kind == "dead_letter":
            inp = self.inputs[pending.owner]
            self._log("error", "dead-letter-refused", detail + "; input requeued instead",
                      inp.fragment_id)
            self._fire(INPUT, inp, InputEvent.GIVE_BACK)
            if inp.tag:
                self._emit(fx.Nack(inp.tag, requeue=True))
            self._maybe_forget(inp)
        else:
            self._fail_output(self.outputs[pending.owner], "publish-refused", detail, True)
