"""The end of the stream (§12), stopping (fatal, SIGTERM, a lost transformation), deadlines,
and the progress check after every event.
"""

from __future__ import annotations

from states import INPUT, OUTPUT, STEP, InputState, OutputEvent, OutputState, StepEvent, StepState
from states import IntakeState as IS

from . import effects as fx
from . import events as ev
from .base import CoreBase
from .models import _PRE_DISPATCH, EXIT_FATAL, EXIT_OK, EXIT_TRANSFORMATION, KILL_FRAME, Output
from .protocol import inside

_KILLING = (StepState.KILL_SENT, StepState.TRANSFORMATION_DONE)  # the kill goes to every tts
_EXITING = (StepState.TRANSFORMATION_DONE, StepState.STOPPING)  # exit once drained
# Compared on every event: module constants, cheaper than a look-up in the table.
_ENDED, _INPUT_ENDED = IS.ENDED, StepState.INPUT_ENDED
_TRANSFORMATION_DONE = StepState.TRANSFORMATION_DONE


class StreamRules(CoreBase):
    def _on_upstream_finished(self, _: ev.UpstreamFinished) -> None:
        self.upstream_finished = True
        if self.step.state == StepState.CONSUMING:
            self._begin_queue_drain()

    def _begin_queue_drain(self) -> None:
        self._fire(STEP, self.step, StepEvent.UPSTREAM_FINISHED)
        self._emit(fx.InspectQueue())

    def _on_fatal(self, e: ev.Fatal) -> None:
        self._stop(EXIT_FATAL, e.reason, e.error)

    def _on_shutdown(self, e: ev.ShutdownRequested) -> None:
        self._log("info", "shutdown-requested",
                  f"{e.signal}: finishing in-flight fragments for up to "
                  f"{self.cfg.shutdown_grace:g}s, then giving the rest back")
        self.deadlines["shutdown"] = self.now + self.cfg.shutdown_grace
        self._stop(EXIT_OK, "", "", give_back_dispatched=not (self.tts or self.fts))

    def _stop(self, code: int, reason: str, detail: str, give_back_dispatched: bool = True):
        if reason:
            self._log("error", reason, detail)
        self.exit_code = max(code, self.exit_code or 0)
        self.exit_reason = self.exit_reason or detail
        if self.step.state != StepState.STOPPING:
            self._fire(STEP, self.step, StepEvent.STOP)
        self._stop_consuming()
        for inp in list(self.inputs.values()):
            if inp.state in _PRE_DISPATCH or (give_back_dispatched
                                              and inp.state == InputState.DISPATCHED):
                self._give_back(inp, "stopping", "the sidecar is stopping")

    def _on_tick(self, _: ev.Tick) -> None:
        due = [name for name, t in self.deadlines.items() if t <= self.now]
        for name in due:
            del self.deadlines[name]
            {"inspect": lambda: self.broker_up and self._emit(fx.InspectQueue()),
             "grace": self._on_grace_expired,
             "connect": self._on_connect_timeout,
             "shutdown": self._on_shutdown_grace_over,
             "fts_close": lambda: None,
             "stuck": self._report_stuck}[name]()

    def _on_shutdown_grace_over(self) -> None:
        """SIGTERM's grace is over: every input not yet acked goes back to the broker, so
        the sidecar can exit 0 now instead of outlasting the pod's termination grace.

        Outputs that hold an input's ack are abandoned with it (the redelivered input makes
        them again, with the same ids); a descriptor already published may then appear
        twice with the same message_id, which downstream de-duplicates. Outputs that hold
        no input (the transformation sent them after done_with) are still waited for: no
        redelivery could make them again. Downloads still running are abandoned too.
        """
        detail = "shutdown grace over"
        for out in [o for o in self.outputs.values() if o.gates]:
            self._abandon_output(out)
        for inp in list(self.inputs.values()):
            if inp.state not in INPUT.terminal and inp.state != InputState.DEAD_LETTERING:
                self._give_back(inp, "shutdown", detail)
        abandoned = [i for i in self.inputs.values()
                     if i.state in INPUT.terminal and i.downloads_left > 0]
        for inp in abandoned:  # their late completions are ignored (unknown serials)
            self._emit(fx.DeleteFiles(inp.paths, inp.dirs))
            inp.paths = ()
            self._forget(inp)
        if abandoned:
            self._log("warning", "downloads-abandoned",
                      f"{len(abandoned)} download(s) still running at the end of the "
                      "shutdown grace were abandoned")

    def _abandon_output(self, out: Output) -> None:
        """Forget an output whose inputs are being given back: no publish of it is awaited,
        its local files (if not uploaded yet) are deleted."""
        self.publishes = {pid: p for pid, p in self.publishes.items()
                          if p.kind == "dead_letter" or p.owner != out.serial}
        files_local = out.state == OutputState.RECEIVED
        self._fire(OUTPUT, out, OutputEvent.FAIL)
        self._log("warning", "output-abandoned", "shutdown grace over before the output "
                  "was stored and published; its inputs are requeued", out.fragment_id)
        local = [f.path for f in out.files if inside(self.cfg.volume, f.path)]
        if files_local and local:
            self._emit(fx.DeleteFiles(tuple(local)))
        for inp in self._gated(out):
            inp.unuploaded.discard(out.serial)
            inp.unrecorded.discard(out.serial)
        self._forget(out)

    def _on_grace_expired(self) -> None:
        self._stop(EXIT_TRANSFORMATION, "transformation-lost",
                   f"the transformation did not reconnect within "
                   f"{self.cfg.transformation_grace:g}s")

    def _advance(self) -> None:
        """After every event: dispatch, send the kill when due, exit when drained."""
        if self.intake.state == _ENDED:  # no consumer, for good; the broker is there
            self._after_intake()
        self._steer_intake()
        if self.ready:
            self._dispatch_ready()
        state = self.step.state
        if state == _INPUT_ENDED and not self._pending_dispatch():
            self._fire(STEP, self.step, StepEvent.SEND_KILL)
            state = self.step.state
        if state in _KILLING:
            for conn in self.tts:
                if conn not in self.killed:
                    self.killed.add(conn)
                    self._emit(fx.SendFrame(conn, KILL_FRAME))
        if state == _TRANSFORMATION_DONE and (not self.fts or "fts_close" not in
                                               self.deadlines):
            self.deadlines.pop("fts_close", None)
            self._finish_unfinished()
        if state in _EXITING and self._drained():
            if self.exit_code is None:
                self.exit_code = EXIT_OK
            self._fire(STEP, self.step, StepEvent.EXIT)
            self.deadlines.clear()
            if self.bucket_dirs:
                self._emit(fx.DeleteFiles((), tuple(sorted(self.bucket_dirs))))
            self._emit(fx.Exit(self.exit_code, self.exit_reason or "done"))
            return
        self._watch_stuck()

    def _pending_dispatch(self) -> bool:
        counts = self.states[INPUT.name]
        return any(counts[s] > 0 for s in _PRE_DISPATCH)

    def _finish_unfinished(self) -> None:
        """The transformation said it is complete: an input it never finished goes back."""
        unfinished = [i for i in self.inputs.values() if i.state == InputState.DISPATCHED]
        for inp in unfinished:
            self._give_back(inp, "unfinished",
                            "the transformation completed without done_with for this input")
        if unfinished:
            self.exit_code = max(self.exit_code or 0, EXIT_TRANSFORMATION)
            self.exit_reason = (f"{len(unfinished)} input(s) were never finished by the "
                                "transformation; returned to the queue")

    def _drained(self) -> bool:
        return not self.inputs and not self.outputs and not self.publishes
