"""The end of the stream (§12) and stopping (fatal, SIGTERM, a lost transformation)."""

from __future__ import annotations

from states import INPUT, OUTPUT, InputState, OutputEvent, OutputState, StepEvent, StepState

from . import effects as fx
from . import events as ev
from .inputs import give_back
from .models import _PRE_DISPATCH, EXIT_FATAL, EXIT_OK, EXIT_TRANSFORMATION, Output
from .parts import Parts
from .protocol import inside


def on_upstream_finished(p: Parts, _: ev.UpstreamFinished) -> None:
    p.step.finish_upstream()
    if p.step.state == StepState.CONSUMING:
        begin_queue_drain(p)


def begin_queue_drain(p: Parts) -> None:
    p.step.fire(StepEvent.UPSTREAM_FINISHED)
    p.fx.emit(fx.InspectQueue())


def on_fatal(p: Parts, e: ev.Fatal) -> None:
    stop(p, EXIT_FATAL, e.reason, e.error)


def on_shutdown(p: Parts, e: ev.ShutdownRequested) -> None:
    p.fx.log("info", "shutdown-requested",
             f"{e.signal}: finishing in-flight fragments for up to "
             f"{p.cfg.shutdown_grace:g}s, then giving the rest back")
    p.step.set_deadline("shutdown", p.fx.now + p.cfg.shutdown_grace)
    stop(p, EXIT_OK, "", "", give_back_dispatched=not p.link.connected)


def stop(p: Parts, code: int, reason: str, detail: str, give_back_dispatched: bool = True
         ) -> None:
    if reason:
        p.fx.log("error", reason, detail)
    p.step.fail(code, detail)
    if p.step.state != StepState.STOPPING:
        p.step.fire(StepEvent.STOP)
    p.intake.end()
    for inp in list(p.fragments.inputs.values()):
        if inp.state in _PRE_DISPATCH or (give_back_dispatched
                                          and inp.state == InputState.DISPATCHED):
            give_back(p, inp, "stopping", "the sidecar is stopping")


def on_shutdown_grace_over(p: Parts) -> None:
    """SIGTERM's grace is over: every input not yet acked goes back to the broker, so
    the sidecar can exit 0 now instead of outlasting the pod's termination grace.

    Outputs that hold an input's ack are abandoned with it (the redelivered input makes
    them again, with the same ids); a descriptor already published may then appear
    twice with the same message_id, which downstream de-duplicates. Outputs that hold
    no input (the transformation sent them after done_with) are still waited for: no
    redelivery could make them again. Downloads still running are abandoned too.
    """
    detail = "shutdown grace over"
    for out in [o for o in p.fragments.outputs.values() if o.gates]:
        _abandon_output(p, out)
    for inp in list(p.fragments.inputs.values()):
        if inp.state not in INPUT.terminal and inp.state != InputState.DEAD_LETTERING:
            give_back(p, inp, "shutdown", detail)
    abandoned = [i for i in p.fragments.inputs.values()
                 if i.state in INPUT.terminal and i.downloads_left > 0]
    for inp in abandoned:  # their late completions are ignored (unknown serials)
        p.fx.emit(fx.DeleteFiles(inp.paths, inp.dirs))
        inp.paths = ()
        p.fragments.forget(inp)
    if abandoned:
        p.fx.log("warning", "downloads-abandoned",
                 f"{len(abandoned)} download(s) still running at the end of the "
                 "shutdown grace were abandoned")


def _abandon_output(p: Parts, out: Output) -> None:
    """Forget an output whose inputs are being given back: no publish of it is awaited,
    its local files (if not uploaded yet) are deleted."""
    p.publisher.drop_output(out.serial)
    files_local = out.state == OutputState.RECEIVED
    p.fragments.fire(OUTPUT, out, OutputEvent.FAIL)
    p.fx.log("warning", "output-abandoned", "shutdown grace over before the output "
             "was stored and published; its inputs are requeued", out.fragment_id)
    local = [f.path for f in out.files if inside(p.cfg.volume, f.path)]
    if files_local and local:
        p.fx.emit(fx.DeleteFiles(tuple(local)))
    for inp in p.fragments.gated(out):
        inp.unuploaded.discard(out.serial)
        inp.unrecorded.discard(out.serial)
    p.fragments.forget(out)


def on_grace_expired(p: Parts) -> None:
    stop(p, EXIT_TRANSFORMATION, "transformation-lost",
         f"the transformation did not reconnect within {p.cfg.transformation_grace:g}s")


def finish_unfinished(p: Parts) -> None:
    """The transformation said it is complete: an input it never finished goes back."""
    unfinished = p.fragments.in_state(InputState.DISPATCHED)
    for inp in unfinished:
        give_back(p, inp, "unfinished",
                  "the transformation completed without done_with for this input")
    if unfinished:
        p.step.override_exit(EXIT_TRANSFORMATION, f"{len(unfinished)} input(s) were never "
                             "finished by the transformation; returned to the queue")


def drained(p: Parts) -> bool:
    return not p.fragments.in_flight and not p.publisher.publishes
