"""Output fragments: validation, deterministic ids (§16.15), gating, uploads, and the
confirms of their descriptor and lineage.
"""

from __future__ import annotations

from states import INPUT, OUTPUT, InputEvent, OutputEvent, OutputState

from . import effects as fx
from . import events as ev
from .inputs import maybe_forget, progress
from .models import Output, PendingPublish
from .parts import Parts
from .protocol import OutputFragment, RemoteFile, encode_lineage, encode_remote, inside


def on_output(p: Parts, msg: OutputFragment) -> None:
    cfg = p.cfg
    out = Output(serial=p.fragments.new_serial(), state=OUTPUT.initial, files=msg.files,
                 predecessors=msg.predecessors, custom=msg.custom,
                 fragment_id=p.ids.next_id(msg.predecessors))
    p.fragments.add(OUTPUT, out)
    p.fragments.gate(out)
    problem = _output_problem(p, msg)
    if problem:
        fail_output(p, out, "invalid-output", problem, transient=False)
        return
    if not msg.predecessors_given:
        p.fx.log("warning", "output-without-predecessors",
                 "output names no predecessors; published with predecessors []",
                 out.fragment_id)
    out.target_queue = cfg.queue_mapping.get(msg.output_channel or "")
    out.queue = out.target_queue or cfg.output_queue
    out.remote = tuple(RemoteFile(f.name, cfg.object_key(out.fragment_id, f.name),
                                  cfg.output_bucket) for f in msg.files)
    out.uploads_left = len(msg.files)
    for i, (f, r) in enumerate(zip(msg.files, out.remote, strict=True)):
        p.fx.emit(fx.UploadFile(out.serial, i, r.bucket, r.path, f.path))


def _output_problem(p: Parts, msg: OutputFragment) -> str:
    if msg.problem:
        return msg.problem
    for f in msg.files:
        if not inside(p.cfg.volume, f.path):
            return f"output file {f.path!r} is not inside the data volume"
    if msg.output_channel and msg.output_channel not in p.cfg.queue_mapping:
        return (f"output_channel {msg.output_channel!r} is not in "
                "ITERUM_CONFIG.queue_mapping")
    return ""


def on_uploaded(p: Parts, e: ev.FileUploaded) -> None:
    out = p.fragments.outputs.get(e.output_id)
    if out is not None:
        out.uploads_left -= 1
        _uploads_settled(p, out)


def on_upload_failed(p: Parts, e: ev.UploadFailed) -> None:
    out = p.fragments.outputs.get(e.output_id)
    if out is not None:
        out.uploads_left -= 1
        out.failure = out.failure or e
        _uploads_settled(p, out)


def _uploads_settled(p: Parts, out: Output) -> None:
    if out.uploads_left > 0:
        return
    if out.failure is not None:
        f = out.failure
        fail_output(p, out, f.reason, f"upload failed: {f.error} "
                    f"(after {f.attempts} attempts)", f.transient)
        return
    p.fragments.fire(OUTPUT, out, OutputEvent.UPLOAD_DONE)
    p.fx.emit(fx.DeleteFiles(tuple(f.path for f in out.files)))
    for inp in p.fragments.gated(out):
        inp.unuploaded.discard(out.serial)
        progress(p, inp)
    out.descriptor = encode_remote(out.fragment_id, list(out.remote),
                                   list(out.predecessors), out.target_queue, out.custom)
    p.publish(PendingPublish("descriptor", out.serial, out.queue, out.descriptor,
                             out.fragment_id, ()))


def fail_output(p: Parts, out: Output, reason: str, detail: str, transient: bool) -> None:
    files_local = out.state == OutputState.RECEIVED  # deleted on upload_done otherwise
    p.fragments.fire(OUTPUT, out, OutputEvent.FAIL)
    gated = p.fragments.gated(out)
    if gated:
        # The inputs are kept (requeued or dead-lettered), so the output can be made
        # again: its local files need not stay behind.
        p.fx.log("error", f"output-{reason}", detail + "; its inputs will be "
                 + ("requeued" if transient else "dead-lettered"), out.fragment_id)
        inside_volume = [f.path for f in out.files if inside(p.cfg.volume, f.path)]
        if files_local and inside_volume:
            p.fx.emit(fx.DeleteFiles(tuple(inside_volume)))
    else:
        where = ("its files are left on the volume" if files_local else
                 f"its objects are in bucket {p.cfg.output_bucket}")
        p.fx.log("error", "output-lost", f"{detail}; no input waits for it (done_with "
                 f"came first), so it cannot be made again: {where}", out.fragment_id)
    for inp in gated:
        inp.taint = inp.taint or (reason, detail, transient)
        inp.unuploaded.discard(out.serial)
        inp.unrecorded.discard(out.serial)
        progress(p, inp)
    p.fragments.forget(out)


def on_confirmed(p: Parts, e: ev.PublishConfirmed) -> None:
    pending = p.publisher.take(e.publish_id)
    if pending is None:
        return
    if pending.kind == "dead_letter":
        inp = p.fragments.inputs[pending.owner]
        if inp.tag:
            p.fx.emit(fx.Ack(inp.tag))
        p.fragments.fire(INPUT, inp, InputEvent.DEAD_LETTER_CONFIRMED)
        maybe_forget(p, inp)
        return
    out = p.fragments.outputs[pending.owner]
    if pending.kind == "descriptor":
        p.fragments.fire(OUTPUT, out, OutputEvent.PUBLISH_CONFIRMED)
        p.publish(PendingPublish("lineage", out.serial, p.cfg.lineage_queue,
                                 encode_lineage(p.cfg.step, out.descriptor),
                                 out.fragment_id, ()))
        return
    p.fragments.fire(OUTPUT, out, OutputEvent.LINEAGE_CONFIRMED)
    p.restart.recorded(out.fragment_id)
    for inp in p.fragments.gated(out):
        inp.unrecorded.discard(out.serial)
        progress(p, inp)
    p.fragments.forget(out)


def on_rejected(p: Parts, e: ev.PublishRejected) -> None:
    pending = p.publisher.take(e.publish_id)
    if pending is None:
        return
    if pending.attempt < p.cfg.publish_attempts:
        p.fx.log("warning", "publish-refused",
                 f"broker refused a {pending.kind} publish ({e.reason}); retrying")
        p.publish(PendingPublish(pending.kind, pending.owner, pending.queue, pending.body,
                                 pending.message_id, pending.headers, pending.attempt + 1))
        return
    detail = f"broker refused the {pending.kind} {pending.attempt} times ({e.reason})"
    if pending.kind == "dead_letter":
        inp = p.fragments.inputs[pending.owner]
        p.fx.log("error", "dead-letter-refused", detail + "; input requeued instead",
                 inp.fragment_id)
        p.fragments.fire(INPUT, inp, InputEvent.GIVE_BACK)
        if inp.tag:
            p.fx.emit(fx.Nack(inp.tag, requeue=True))
        maybe_forget(p, inp)
    else:
        fail_output(p, p.fragments.outputs[pending.owner], "publish-refused", detail, True)
