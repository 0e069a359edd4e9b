"""An input's downloads and its end: ack once its gating outputs are recorded (§16.8), dead
letter (§16.1) or give back, and the cleanup of its local files.
"""

from __future__ import annotations

import posixpath

from states import INPUT, InputEvent, InputState

from . import effects as fx
from . import events as ev
from .base import CoreBase
from .models import _UNPROCESSED, Input, PendingPublish
from .protocol import input_dirs, local_input_path

# Compared on every progress check: module constants, cheaper than look-ups in the table.
_PROCESSED, _UPLOADED, _PUBLISHED = InputState.PROCESSED, InputState.UPLOADED, InputState.PUBLISHED


class InputRules(CoreBase):
    def _start_downloads(self, inp: Input) -> None:
        desc = inp.desc
        assert desc is not None
        inp.paths = tuple(local_input_path(self.cfg.volume, desc, f) for f in desc.files)
        inp.dirs = input_dirs(self.cfg.volume, desc)
        self.bucket_dirs.update(posixpath.join(self.cfg.volume, f.bucket) for f in desc.files)
        inp.downloads_left = len(desc.files)
        for i, (f, dest) in enumerate(zip(desc.files, inp.paths, strict=True)):
            self._emit(fx.DownloadFile(inp.serial, i, f.bucket, f.path, dest))
        if not desc.files:
            self._downloads_settled(inp)

    def _on_downloaded(self, e: ev.FileDownloaded) -> None:
        inp = self.inputs.get(e.input_id)
        if inp is not None:
            inp.downloads_left -= 1
            self._downloads_settled(inp)

    def _on_download_failed(self, e: ev.DownloadFailed) -> None:
        inp = self.inputs.get(e.input_id)
        if inp is None:
            return
        inp.downloads_left -= 1
        inp.failure = inp.failure or e
        self._downloads_settled(inp)

    def _downloads_settled(self, inp: Input) -> None:
        if inp.downloads_left > 0:
            return
        if inp.state in INPUT.terminal:  # given back while downloading
            self._cleanup_input(inp)
            self._maybe_forget(inp)
        elif inp.failure is not None:
            self._cleanup_input(inp)
            f = inp.failure
            detail = f"{f.error} (after {f.attempts} attempts)"
            if f.transient:
                self._give_back(inp, "storage-unavailable", f"download failed: {detail}")
            else:
                self._dead_letter(inp, f.reason, f"download failed: {detail}")
        else:
            self._fire(INPUT, inp, InputEvent.DOWNLOAD_DONE)
            self.ready.append(inp.serial)

    def _progress(self, inp: Input) -> None:
        """Move a processed input along as its gating outputs land; ack at the end."""
        if inp.state == _PROCESSED and not inp.unuploaded:
            self._fire(INPUT, inp, InputEvent.OUTPUTS_UPLOADED)
        if inp.state == _UPLOADED and not inp.unrecorded:
            self._fire(INPUT, inp, InputEvent.OUTPUTS_PUBLISHED)
        if inp.state != _PUBLISHED or not inp.tag:
            return  # a void tag: settled once the delivery comes back (or the input ends)
        if inp.taint is None:
            self._emit(fx.Ack(inp.tag))
            self._fire(INPUT, inp, InputEvent.ACK)
            self._maybe_forget(inp)
            return
        reason, detail, transient = inp.taint
        if transient:
            self._give_back(inp, reason, detail)
        else:
            self._dead_letter(inp, reason, detail)

    def _dead_letter(self, inp: Input, reason: str, detail: str) -> None:
        """§16.1: keep the body with the reason, then ack the original."""
        if not inp.tag:  # the broker has it again; whoever gets it dead-letters it
            self._release(inp)
            return
        state = inp.state
        self._fire(INPUT, inp, InputEvent.DEAD_LETTER)
        self._log("error", f"dead-letter-{reason}", detail, inp.fragment_id)
        attempts = str(inp.failure.attempts if inp.failure else 1)
        headers = (("x-iterum-error-class", reason), ("x-iterum-error", detail[:1000]),
                   ("x-iterum-state", state), ("x-iterum-attempts", attempts),
                   ("x-iterum-step", self.cfg.step))
        self._publish(PendingPublish("dead_letter", inp.serial, self.cfg.dead_letter_queue,
                                     inp.body, inp.fragment_id or None, headers))

    def _give_back(self, inp: Input, reason: str, detail: str) -> None:
        self._log("warning", f"requeued-{reason}", detail, inp.fragment_id)
        self._fire(INPUT, inp, InputEvent.GIVE_BACK)
        if inp.tag:  # a void tag went back to the queue with its connection
            self._emit(fx.Nack(inp.tag, requeue=True))
        self._cleanup_input(inp)
        self._maybe_forget(inp)

    def _give_back_unprocessed(self, reason: str, detail: str) -> None:
        for inp in list(self.inputs.values()):
            if inp.state in _UNPROCESSED:
                self._give_back(inp, reason, detail)

    def _cleanup_input(self, inp: Input) -> None:
        """Delete the local copies once nothing is writing them (exactly once)."""
        if inp.paths and inp.downloads_left == 0:
            self._emit(fx.DeleteFiles(inp.paths, inp.dirs))
            inp.paths = ()

    def _maybe_forget(self, inp: Input) -> None:
        if inp.state in INPUT.terminal and inp.downloads_left == 0:
            self._cleanup_input(inp)
            self._forget(inp)
