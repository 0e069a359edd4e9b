"""An input's downloads and its end: ack once its gating outputs are recorded (§16.8), dead
letter (§16.1) or give back, and the cleanup of its local files.
"""

from __future__ import annotations

from states import INPUT, InputEvent, InputState

from . import effects as fx
from . import events as ev
from .models import _UNPROCESSED, Input, PendingPublish
from .parts import Parts
from .protocol import input_layout

# Compared on every progress check: module constants, cheaper than look-ups in the table.
_PROCESSED, _UPLOADED, _PUBLISHED = InputState.PROCESSED, InputState.UPLOADED, InputState.PUBLISHED


def start_downloads(p: Parts, inp: Input) -> None:
    desc = inp.desc
    assert desc is not None
    inp.paths, inp.dirs, bucket_dirs = input_layout(p.cfg.volume, desc)
    p.step.add_bucket_dirs(bucket_dirs)
    inp.downloads_left = len(desc.files)
    for i, (f, dest) in enumerate(zip(desc.files, inp.paths, strict=True)):
        p.fx.emit(fx.DownloadFile(inp.serial, i, f.bucket, f.path, dest))
    if not desc.files:
        _downloads_settled(p, inp)


def on_downloaded(p: Parts, e: ev.FileDownloaded) -> None:
    inp = p.fragments.inputs.get(e.input_id)
    if inp is not None:
        inp.downloads_left -= 1
        _downloads_settled(p, inp)


def on_download_failed(p: Parts, e: ev.DownloadFailed) -> None:
    inp = p.fragments.inputs.get(e.input_id)
    if inp is None:
        return
    inp.downloads_left -= 1
    inp.failure = inp.failure or e
    _downloads_settled(p, inp)


def _downloads_settled(p: Parts, inp: Input) -> None:
    if inp.downloads_left > 0:
        return
    if inp.state in INPUT.terminal:  # given back while downloading
        cleanup(p, inp)
        maybe_forget(p, inp)
    elif inp.failure is not None:
        cleanup(p, inp)
        f = inp.failure
        detail = f"{f.error} (after {f.attempts} attempts)"
        if f.transient:
            give_back(p, inp, "storage-unavailable", f"download failed: {detail}")
        else:
            dead_letter(p, inp, f.reason, f"download failed: {detail}")
    else:
        p.fragments.fire(INPUT, inp, InputEvent.DOWNLOAD_DONE)
        p.link.queue(inp.serial)


def progress(p: Parts, inp: Input) -> None:
    """Move a processed input along as its gating outputs land; ack at the end."""
    if inp.state == _PROCESSED and not inp.unuploaded:
        p.fragments.fire(INPUT, inp, InputEvent.OUTPUTS_UPLOADED)
    if inp.state == _UPLOADED and not inp.unrecorded:
        p.fragments.fire(INPUT, inp, InputEvent.OUTPUTS_PUBLISHED)
    if inp.state != _PUBLISHED or not inp.tag:
        return  # a void tag: settled once the delivery comes back (or the input ends)
    if inp.taint is None:
        p.fx.emit(fx.Ack(inp.tag))
        p.fragments.fire(INPUT, inp, InputEvent.ACK)
        maybe_forget(p, inp)
        return
    reason, detail, transient = inp.taint
    if transient:
        give_back(p, inp, reason, detail)
    else:
        dead_letter(p, inp, reason, detail)


def dead_letter(p: Parts, inp: Input, reason: str, detail: str) -> None:
    """§16.1: keep the body with the reason, then ack the original."""
    if not inp.tag:  # the broker has it again; whoever gets it dead-letters it
        release(p, inp)
        return
    state = inp.state
    p.fragments.fire(INPUT, inp, InputEvent.DEAD_LETTER)
    p.fx.log("error", f"dead-letter-{reason}", detail, inp.fragment_id)
    attempts = str(inp.failure.attempts if inp.failure else 1)
    headers = (("x-iterum-error-class", reason), ("x-iterum-error", detail[:1000]),
               ("x-iterum-state", state), ("x-iterum-attempts", attempts),
               ("x-iterum-step", p.cfg.step))
    p.publish(PendingPublish("dead_letter", inp.serial, p.cfg.dead_letter_queue, inp.body,
                             inp.fragment_id or None, headers))


def release(p: Parts, inp: Input) -> None:
    """The broker took this delivery back with its connection: nothing to settle."""
    p.fragments.fire(INPUT, inp, InputEvent.GIVE_BACK)
    cleanup(p, inp)
    maybe_forget(p, inp)


def give_back(p: Parts, inp: Input, reason: str, detail: str) -> None:
    p.fx.log("warning", f"requeued-{reason}", detail, inp.fragment_id)
    p.fragments.fire(INPUT, inp, InputEvent.GIVE_BACK)
    if inp.tag:  # a void tag went back to the queue with its connection
        p.fx.emit(fx.Nack(inp.tag, requeue=True))
    cleanup(p, inp)
    maybe_forget(p, inp)


def give_back_unprocessed(p: Parts, reason: str, detail: str) -> None:
    for inp in list(p.fragments.inputs.values()):
        if inp.state in _UNPROCESSED:
            give_back(p, inp, reason, detail)


def cleanup(p: Parts, inp: Input) -> None:
    """Delete the local copies once nothing is writing them (exactly once)."""
    if inp.paths and inp.downloads_left == 0:
        p.fx.emit(fx.DeleteFiles(inp.paths, inp.dirs))
        inp.paths = ()


def maybe_forget(p: Parts, inp: Input) -> None:
    if inp.state in INPUT.terminal and inp.downloads_left == 0:
        cleanup(p, inp)
        p.fragments.forget(inp)


def after_intake(p: Parts) -> None:
    """Nothing more can be delivered here: what waited for a delivery is settled.

    A void input that finished waits no longer (its delivery went to another consumer,
    whose outputs have the same ids); the killed predecessor's knowledge and leftovers
    are no use any more.
    """
    waiting = [i for i in p.fragments.inputs.values()
               if not i.tag and i.state == InputState.PUBLISHED]
    for inp in waiting:
        release(p, inp)
    if waiting:
        p.fx.log("info", "released", f"{len(waiting)} input(s) finished here after the "
                 "broker connection was lost were not delivered here again (another "
                 "consumer had them); their outputs are published with the same ids")
    had_leftovers = bool(p.restart.leftovers)
    files, dirs = p.restart.forget()
    if had_leftovers:
        p.fx.emit(fx.DeleteFiles(files, dirs))
