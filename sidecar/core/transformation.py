"""The transformation on tts.sock and fts.sock: connections, dispatch, frames, done_with, its
kill, and its crash (§16.5).
"""

from __future__ import annotations

from states import INPUT, STEP, InputEvent, InputState, StepEvent, StepState

from . import effects as fx
from . import events as ev
from .base import CoreBase
from .models import EXIT_TRANSFORMATION, Input
from .protocol import DoneWith, InvalidMessage, Kill, OutputFragment, encode_local, parse_frame

_NO_DISPATCH = (StepState.STOPPING, StepState.EXITED)


class TransformationRules(CoreBase):
    def _transformation_seen(self) -> bool:
        """Has the transformation ever connected? (Once it has, a disconnect is a crash,
        handled by the grace period; without new state, so snapshots stay as they are.)"""
        return bool(self.tts or self.fts or self.orphaned or self.kill_received)

    def _on_connect_timeout(self) -> None:
        """The transformation never connected (it died at start, or its image never came
        up): the original waited forever; give the inputs back and exit 3."""
        if self.step.state == StepState.STOPPING or self._transformation_seen():
            return
        self._stop(EXIT_TRANSFORMATION, "transformation-never-connected",
                   f"the transformation did not connect to the sockets within "
                   f"{self.cfg.transformation_connect_timeout:g}s "
                   "(SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT)")

    def _on_connected(self, e: ev.Connected) -> None:
        self.deadlines.pop("grace", None)
        self.deadlines.pop("connect", None)
        if e.channel == "fts":
            self.fts.add(e.conn)
            return
        self.tts.append(e.conn)
        if self.orphaned:
            self.orphaned = False
            self._redispatch_orphans()

    def _redispatch_orphans(self) -> None:
        """§16.5: the transformation came back after a crash; it has none of its fragments."""
        orphans = [i for i in self.inputs.values() if i.state == InputState.DISPATCHED]
        for inp in orphans:
            self._send_fragment(inp, InputEvent.REDISPATCH)
        if orphans:
            self._log("warning", "redispatched",
                      f"{len(orphans)} fragment(s) sent again after the transformation "
                      "reconnected")

    def _on_disconnected(self, e: ev.Disconnected) -> None:
        if e.channel == "tts" and e.conn in self.tts:
            self.tts.remove(e.conn)
        self.fts.discard(e.conn)
        self.killed.discard(e.conn)
        if self.tts or self.fts or self.kill_received:
            return
        if self.step.state == StepState.STOPPING:
            self._give_back_unprocessed("transformation-gone", "the transformation is gone")
            return
        self.orphaned = True
        self.deadlines["grace"] = self.now + self.cfg.transformation_grace
        self._log("warning", "transformation-disconnected",
                  f"the transformation closed both sockets without a kill; waiting "
                  f"{self.cfg.transformation_grace:g}s for it to reconnect")

    def _dispatch_ready(self) -> None:
        while self.ready and self.tts and self.step.state not in _NO_DISPATCH:
            inp = self.inputs.get(self.ready.popleft())
            if inp is not None and inp.state == InputState.DOWNLOADED:
                self._send_fragment(inp, InputEvent.DISPATCH)

    def _send_fragment(self, inp: Input, trigger: str) -> None:
        assert inp.desc is not None
        conn = self.tts[self._rr % len(self.tts)]
        self._rr += 1
        inp.conn = conn
        # The transformation starts on it (again): its outputs are counted from here, so a
        # re-run yields the same ids. Outputs naming it that came before the dispatch can
        # only be a killed sidecar's, finished by a transformation that outlived it.
        self._reset_output_index(inp.fragment_id)
        self._fire(INPUT, inp, trigger)
        self._emit(fx.SendFrame(conn, encode_local(inp.desc, list(inp.paths))))

    def _on_frame_rejected(self, e: ev.FrameRejected) -> None:
        self._log("error", "frame-rejected", f"connection {e.conn}: {e.reason}; dropped it")
        self._emit(fx.CloseConnection(e.conn))

    def _on_frame(self, e: ev.FrameReceived) -> None:
        try:
            message = parse_frame(e.payload)
        except InvalidMessage as err:
            # The framing is intact, so skip just this frame: dropping the connection
            # would throw away valid frames already queued behind it.
            self._log("error", f"frame-{err.reason}",
                      f"connection {e.conn}: {err}; frame of {len(e.payload)} bytes skipped")
            return
        if isinstance(message, OutputFragment):
            self._on_output(message)
        elif isinstance(message, DoneWith):
            self._on_done_with(message.fragment_id)
        elif isinstance(message, Kill):
            self._on_kill()

    def _on_done_with(self, fragment_id: str) -> None:
        inp = self.inputs.get(self.by_fragment.get(fragment_id, -1))
        if inp is None:
            self._log("warning", "done-with-unknown",
                      "done_with for a fragment that is not in flight; ignored", fragment_id)
            return
        if inp.state != InputState.DISPATCHED:
            self._log("warning", "done-with-unexpected",
                      f"done_with in state {inp.state}; ignored", fragment_id)
            return
        self._fire(INPUT, inp, InputEvent.DONE_WITH)
        self._cleanup_input(inp)
        self._progress(inp)

    def _on_kill(self) -> None:
        if self.kill_received:
            self._log("warning", "second-kill", "a second kill from the transformation; ignored")
            return
        self.kill_received = True
        self.deadlines.pop("grace", None)
        if self.step.state == StepState.KILL_SENT:
            self._fire(STEP, self.step, StepEvent.TRANSFORMATION_FINISHED)
            self.deadlines["fts_close"] = self.now + self.cfg.transformation_grace
        elif self.step.state != StepState.STOPPING:
            self._stop(EXIT_TRANSFORMATION, "early-kill",
                       "the transformation ended before the input stream did")
