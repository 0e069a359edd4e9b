"""RabbitMQ: deliveries, duplicates, the consumer, a lost and regained connection
(docs/reliability.md).
"""

from __future__ import annotations

import hashlib

from states import (
    BROKER_UP,
    CANCELLING,
    INPUT,
    OUTPUT,
    STEP,
    InputEvent,
    InputState,
    OutputEvent,
    OutputState,
    StepEvent,
    StepState,
)
from states import IntakeEvent as IE
from states import IntakeState as IS

from . import effects as fx
from . import events as ev
from .base import CoreBase
from .models import EXIT_FATAL, Input
from .protocol import InvalidMessage, inside, parse_remote

_ADOPTING = (IS.ADOPTING, IS.ADOPTION_ENDING)  # a delivery may be an input to take back
_ENDED = frozenset({IS.ENDING, IS.ENDED, IS.ADOPTION_ENDING, IS.ENDED_BROKER_DOWN})  # no more `end`


class BrokerRules(CoreBase):
    def _on_broker_ready(self, _: ev.BrokerReady) -> None:
        if self.intake.state in BROKER_UP:
            return
        if self.intake.state != IS.STARTING:
            self._on_broker_back()
            return
        self._fire(STEP, self.step, StepEvent.BROKER_READY)
        if self.cfg.transformation_connect_timeout and not self._transformation_seen():
            self.deadlines["connect"] = self.now + self.cfg.transformation_connect_timeout
        reasons = self._pause_reasons()
        if reasons:
            self.paused = reasons
            self._intake_fire(IE.HOLD)
            self._log("warning", "intake-paused", "not consuming yet: " + ", ".join(reasons))
        else:
            self._intake_fire(IE.CONSUME)
            self._emit(fx.StartConsuming(self.cfg.prefetch))
        if self.upstream_finished:
            self._begin_queue_drain()

    def _on_broker_back(self) -> None:
        """Reconnected after a loss: send every unconfirmed publish again (same bodies, same
        message ids: a copy the broker already had is an identical duplicate), and consume
        again unless the input has ended or intake is paused."""
        self._log("info", "broker-reconnected",
                  f"the broker connection is back; {len(self.publishes)} unconfirmed "
                  "publish(es) sent again")
        for publish_id, pending in self.publishes.items():
            self._send_publish(publish_id, pending)
        if self.intake.state == IS.ENDED_BROKER_DOWN:
            if any(not i.tag for i in self.inputs.values()):
                # The input had ended, but the loss put our unacked deliveries back in the
                # queue: consume once more, only to take them back.
                self._intake_fire(IE.ADOPT)
                self._emit(fx.StartConsuming(self.cfg.prefetch))
                self._emit(fx.InspectQueue())
            else:
                self._intake_fire(IE.RECONNECTED)
            return
        # broker_down: the step is consuming or draining the queue (else the input ended)
        reasons = self._pause_reasons()
        if reasons:
            self.paused = reasons
            self._intake_fire(IE.HOLD)
        else:
            self.paused = ()
            self._intake_fire(IE.CONSUME)
            self._emit(fx.StartConsuming(self.cfg.prefetch))
        if self.step.state == StepState.DRAINING_QUEUE:  # an inspection in flight was lost
            self.deadlines.pop("inspect", None)
            self._emit(fx.InspectQueue())

    def _on_delivered(self, e: ev.Delivered) -> None:
        if self.intake.state in _ADOPTING:
            self._adopt_only(e)
            return
        if self.step.state not in (StepState.CONSUMING, StepState.DRAINING_QUEUE):
            self._emit(fx.Nack(e.tag, requeue=True))
            self._log("info", "delivery-returned", "intake is closed; delivery requeued")
            return
        inp = Input(serial=self._new_serial(), state=INPUT.initial, tag=e.tag, body=e.body)
        try:
            inp.desc = parse_remote(e.body)
        except InvalidMessage as err:
            self._track_new(INPUT, inp)
            self._dead_letter(inp, err.reason, str(err))
            return
        self._track_new(INPUT, inp)
        fid = inp.fragment_id
        if e.redelivered:
            self._log("info", "redelivered", "input was delivered before", fid)
        twin = self.inputs.get(self.by_fragment.get(fid, -1))
        if twin is not None:
            self._on_duplicate(inp, twin)
            return
        self.by_fragment[fid] = inp.serial
        inp.indexed = True
        leftover = self.leftovers.pop(fid, None)
        known = self.resume_inputs.pop(fid, None)
        if known is not None:
            resumable = hashlib.sha256(e.body).hexdigest() == known[0]
            if resumable:
                self._resume_input(inp, known[1], leftover)
            else:
                self._log("warning", "resume-mismatch", "the killed sidecar's journal knows "
                          "this id with another body; processed again", fid)
            self._prune_resume_outputs()
            if resumable:
                return
        self._reset_output_index(fid)  # processed again: its outputs get the same ids
        self._start_downloads(inp)
        if leftover is not None:
            # The same paths (and .part files) are downloaded again now and deleted at
            # done_with with their directories; only files of another shape go now.
            reused = {*inp.paths, *(f"{p}.part" for p in inp.paths)}
            extra = tuple(p for p in leftover[0] if p not in reused)
            if extra:
                self._emit(fx.DeleteFiles(extra))

    def _adopt_only(self, e: ev.Delivered) -> None:
        """After the input ended: a delivery of an input still here with a void tag takes
        it back; anything else goes back to the queue, and consuming stops."""
        try:
            fid = parse_remote(e.body).fragment_id
        except InvalidMessage:
            fid = ""
        twin = self.inputs.get(self.by_fragment.get(fid, -1))
        if twin is not None and not twin.tag and twin.body == e.body:
            twin.tag = e.tag
            self._log("info", "redelivery-adopted", f"delivered again after the connection "
                      f"was lost; the input in flight ({twin.state}) takes the new delivery",
                      fid)
            self._progress(twin)
            if not any(not i.tag for i in self.inputs.values()):
                self._stop_adopting()
            return
        self._emit(fx.Nack(e.tag, requeue=True))
        self._log("info", "delivery-returned", "intake is closed; delivery requeued")
        self._stop_adopting()

    def _stop_adopting(self) -> None:
        if self.intake.state == IS.ADOPTING:
            self._intake_fire(IE.STOP_ADOPTING)
            self._emit(fx.StopConsuming())

    def _on_duplicate(self, inp: Input, twin: Input) -> None:
        """A second delivery of an id in flight: the broker still holds the first copy, or
        (its tag void after a lost connection) it is the first copy, delivered again."""
        if not twin.tag and twin.body == inp.body:
            twin.tag = inp.tag
            self._forget(inp)
            self._log("info", "redelivery-adopted", f"delivered again after the connection "
                      f"was lost; the input in flight ({twin.state}) takes the new delivery",
                      twin.fragment_id)
            self._progress(twin)
            return
        if twin.body == inp.body:
            self._log("warning", "duplicate-delivery",
                      "same fragment delivered twice; the copy is acked, the original "
                      "is processed", inp.fragment_id)
            self._emit(fx.Ack(inp.tag))
            self._forget(inp)
            return
        self._dead_letter(inp, "conflicting-duplicate",
                          "another fragment with this id and different content is in flight")

    def _on_queue_inspected(self, e: ev.QueueInspected) -> None:
        if self.intake.state in _ADOPTING:
            if e.ready == 0:  # what is not back here is with another consumer
                self._stop_adopting()
            else:
                self.deadlines["inspect"] = self.now + self.cfg.queue_poll_interval
            return
        if self.step.state != StepState.DRAINING_QUEUE:
            return
        if e.ready == 0:
            self._stop_consuming()
            if self.intake.state not in CANCELLING:  # intake was paused: no consumer left
                self._fire(STEP, self.step, StepEvent.CONSUMER_STOPPED)
        else:
            self.deadlines["inspect"] = self.now + self.cfg.queue_poll_interval

    def _on_consumer_stopped(self, _: ev.ConsumerStopped) -> None:
        """Our basic.cancel is confirmed: of a pause, of the adoption, or of the input."""
        state = self.intake.state
        if state not in CANCELLING:
            return  # none of ours is in flight (the shell posts one per cancel): stray
        self._intake_fire(IE.CONSUMER_STOPPED)
        ending = state == IS.ENDING
        if ending and self.step.state == StepState.DRAINING_QUEUE:
            self._fire(STEP, self.step, StepEvent.CONSUMER_STOPPED)

    def _on_consumer_cancelled(self, _: ev.ConsumerCancelledByBroker) -> None:
        if self.intake.state in (IS.CONSUMING, IS.ADOPTING):
            self._intake_fire(IE.CONSUMER_CANCELLED)
        self._stop(EXIT_FATAL, "consumer-cancelled",
                   "the broker cancelled the consumer (input queue deleted?)")

    def _on_broker_lost(self, e: ev.BrokerLost) -> None:
        """The broker requeued every unacked delivery of the lost connection: their tags are
        void. The work in flight goes on (downloads, the transformation, uploads); publishes
        wait for the reconnect; a void input that finishes waits for its delivery to come
        back (it is then adopted), or for the end of the input (another consumer has it).
        """
        if not e.retrying:
            self._on_broker_gone(e)
            return
        ending = self.intake.state == IS.ENDING  # the consumer is gone anyway
        self._intake_lost()
        void = 0
        for inp in list(self.inputs.values()):
            if not inp.tag or inp.state in INPUT.terminal:
                continue
            inp.tag = 0
            void += 1
            if inp.state == InputState.DEAD_LETTERING:  # the broker has the original: start again
                for publish_id, pending in list(self.publishes.items()):
                    if pending.kind == "dead_letter" and pending.owner == inp.serial:
                        del self.publishes[publish_id]
                self._release(inp)
        self._log("warning", "broker-lost",
                  f"{e.error}; reconnecting. {void} unacked input(s) went back to the queue "
                  f"(kept here until delivered again); {len(self.publishes)} unconfirmed "
                  "publish(es) will be sent again")
        if ending and self.step.state == StepState.DRAINING_QUEUE:
            self._fire(STEP, self.step, StepEvent.CONSUMER_STOPPED)

    def _on_broker_gone(self, e: ev.BrokerLost) -> None:
        """Reconnecting failed for good: nothing can be acked or published any more; the
        broker has every unacked input. Give up the rest, leave the volume clean, exit 1."""
        self._intake_lost()
        for inp in list(self.inputs.values()):
            inp.tag = 0
            if inp.state not in INPUT.terminal:
                self._release(inp)
        self.publishes.clear()
        for out in list(self.outputs.values()):
            if out.state == OutputState.RECEIVED:  # not uploaded: its files would stay behind
                local = tuple(f.path for f in out.files if inside(self.cfg.volume, f.path))
                if local:
                    self._emit(fx.DeleteFiles(local))
            self._fire(OUTPUT, out, OutputEvent.FAIL)
            self._forget(out)
        self._stop(EXIT_FATAL, "broker-unreachable",
                   f"{e.error}; exiting: unacked inputs return to the queue")

    def _release(self, inp: Input) -> None:
        """The broker took this delivery back with its connection: nothing to settle."""
        self._fire(INPUT, inp, InputEvent.GIVE_BACK)
        self._cleanup_input(inp)
        self._maybe_forget(inp)

    def _intake_lost(self) -> None:
        if self.intake.state in BROKER_UP:
            self._intake_fire(IE.BROKER_LOST)

    def _stop_consuming(self) -> None:
        """No more intake, for good (end of the input, or stopping)."""
        state = self.intake.state
        if state in _ENDED:
            return
        self._intake_fire(IE.END)  # a pause's cancel in flight now ends the input
        if state in (IS.CONSUMING, IS.ADOPTING):
            self._emit(fx.StopConsuming())
