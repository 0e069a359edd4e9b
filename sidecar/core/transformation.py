"""The transformation on tts.sock and fts.sock: connections, dispatch, frames, done_with, its
kill, and its crash (§16.5).
"""

from __future__ import annotations

from states import INPUT, InputEvent, InputState, StepEvent, StepState

from . import effects as fx
from . import events as ev
from .inputs import cleanup, give_back_unprocessed, progress
from .models import EXIT_TRANSFORMATION, Input
from .outputs import on_output
from .parts import Parts
from .protocol import DoneWith, InvalidMessage, Kill, OutputFragment, encode_local, parse_frame
from .stream import stop

_NO_DISPATCH = (StepState.STOPPING, StepState.EXITED)


def on_connect_timeout(p: Parts) -> None:
    """The transformation never connected (it died at start, or its image never came
    up): the original waited forever; give the inputs back and exit 3."""
    if p.step.state == StepState.STOPPING or p.link.seen:
        return
    stop(p, EXIT_TRANSFORMATION, "transformation-never-connected",
         f"the transformation did not connect to the sockets within "
         f"{p.cfg.transformation_connect_timeout:g}s "
         "(SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT)")


def on_connected(p: Parts, e: ev.Connected) -> None:
    p.step.cancel("grace")
    p.step.cancel("connect")
    if p.link.connect(e.channel, e.conn):
        _redispatch_orphans(p)


def _redispatch_orphans(p: Parts) -> None:
    """§16.5: the transformation came back after a crash; it has none of its fragments."""
    orphans = p.fragments.in_state(InputState.DISPATCHED)
    for inp in orphans:
        _send_fragment(p, inp, InputEvent.REDISPATCH)
    if orphans:
        p.fx.log("warning", "redispatched",
                 f"{len(orphans)} fragment(s) sent again after the transformation "
                 "reconnected")


def on_disconnected(p: Parts, e: ev.Disconnected) -> None:
    if not p.link.disconnect(e.channel, e.conn):
        return
    if p.step.state == StepState.STOPPING:
        give_back_unprocessed(p, "transformation-gone", "the transformation is gone")
        return
    p.link.orphan()
    p.step.set_deadline("grace", p.fx.now + p.cfg.transformation_grace)
    p.fx.log("warning", "transformation-disconnected",
             f"the transformation closed both sockets without a kill; waiting "
             f"{p.cfg.transformation_grace:g}s for it to reconnect")


def dispatch_ready(p: Parts) -> None:
    link, inputs, step = p.link, p.fragments.inputs, p.step.model
    while link.can_dispatch and step.state not in _NO_DISPATCH:
        inp = inputs.get(link.next_ready())
        if inp is not None and inp.state == InputState.DOWNLOADED:
            _send_fragment(p, inp, InputEvent.DISPATCH)


def _send_fragment(p: Parts, inp: Input, trigger: str) -> None:
    assert inp.desc is not None
    conn = p.link.next_conn()
    inp.conn = conn
    # The transformation starts on it (again): its outputs are counted from here, so a
    # re-run yields the same ids. Outputs naming it that came before the dispatch can
    # only be a killed sidecar's, finished by a transformation that outlived it.
    p.ids.reset(inp.fragment_id)
    p.fragments.fire(INPUT, inp, trigger)
    p.fx.emit(fx.SendFrame(conn, encode_local(inp.desc, list(inp.paths))))


def on_frame_rejected(p: Parts, e: ev.FrameRejected) -> None:
    p.fx.log("error", "frame-rejected", f"connection {e.conn}: {e.reason}; dropped it")
    p.fx.emit(fx.CloseConnection(e.conn))


def on_frame(p: Parts, e: ev.FrameReceived) -> None:
    try:
        message = parse_frame(e.payload)
    except InvalidMessage as err:
        # The framing is intact, so skip just this frame: dropping the connection
        # would throw away valid frames already queued behind it.
        p.fx.log("error", f"frame-{err.reason}",
                 f"connection {e.conn}: {err}; frame of {len(e.payload)} bytes skipped")
        return
    if isinstance(message, OutputFragment):
        on_output(p, message)
    elif isinstance(message, DoneWith):
        _on_done_with(p, message.fragment_id)
    elif isinstance(message, Kill):
        _on_kill(p)


def _on_done_with(p: Parts, fragment_id: str) -> None:
    inp = p.fragments.input_named(fragment_id)
    if inp is None:
        p.fx.log("warning", "done-with-unknown",
                 "done_with for a fragment that is not in flight; ignored", fragment_id)
        return
    if inp.state != InputState.DISPATCHED:
        p.fx.log("warning", "done-with-unexpected",
                 f"done_with in state {inp.state}; ignored", fragment_id)
        return
    p.fragments.fire(INPUT, inp, InputEvent.DONE_WITH)
    cleanup(p, inp)
    progress(p, inp)


def _on_kill(p: Parts) -> None:
    if not p.link.receive_kill():
        p.fx.log("warning", "second-kill", "a second kill from the transformation; ignored")
        return
    p.step.cancel("grace")
    if p.step.state == StepState.KILL_SENT:
        p.step.fire(StepEvent.TRANSFORMATION_FINISHED)
        p.step.set_deadline("fts_close", p.fx.now + p.cfg.transformation_grace)
    elif p.step.state != StepState.STOPPING:
        stop(p, EXIT_TRANSFORMATION, "early-kill",
             "the transformation ended before the input stream did")
