"""RabbitMQ: deliveries, duplicates, the consumer, a lost and regained connection
(docs/reliability.md).
"""

from __future__ import annotations

import hashlib

from states import INPUT, OUTPUT, InputState, OutputEvent, OutputState, StepEvent, StepState
from states import IntakeState as IS

from . import effects as fx
from . import events as ev
from .inputs import dead_letter, progress, release, start_downloads
from .models import EXIT_FATAL, Input
from .parts import Parts
from .protocol import InvalidMessage, inside, parse_remote
from .resume import resume_input
from .stream import begin_queue_drain, stop

_ADOPTING = (IS.ADOPTING, IS.ADOPTION_ENDING)  # a delivery may be an input to take back
_INTAKE_OPEN = (StepState.CONSUMING, StepState.DRAINING_QUEUE)


def on_broker_ready(p: Parts, _: ev.BrokerReady) -> None:
    if p.intake.broker_up:
        return
    if p.intake.state != IS.STARTING:
        _on_broker_back(p)
        return
    p.step.fire(StepEvent.BROKER_READY)
    if p.cfg.transformation_connect_timeout and not p.link.seen:
        p.step.set_deadline("connect", p.fx.now + p.cfg.transformation_connect_timeout)
    p.intake.open(p.link.orphaned)
    if p.step.upstream_finished:
        begin_queue_drain(p)


def _on_broker_back(p: Parts) -> None:
    """Reconnected after a loss: send every unconfirmed publish again (same bodies, same
    message ids: a copy the broker already had is an identical duplicate), and consume
    again unless the input has ended or intake is paused."""
    p.fx.log("info", "broker-reconnected",
             f"the broker connection is back; {len(p.publisher.publishes)} unconfirmed "
             "publish(es) sent again")
    p.publisher.resend()
    if p.intake.state == IS.ENDED_BROKER_DOWN:
        if any(not i.tag for i in p.fragments.inputs.values()):
            p.intake.adopt()  # the loss put our unacked deliveries back in the queue
        else:
            p.intake.reconnected()
        return
    # broker_down: the step is consuming or draining the queue (else the input ended)
    p.intake.reopen(p.link.orphaned)
    if p.step.state == StepState.DRAINING_QUEUE:  # an inspection in flight was lost
        p.step.cancel("inspect")
        p.fx.emit(fx.InspectQueue())


def on_delivered(p: Parts, e: ev.Delivered) -> None:
    if p.intake.model.state in _ADOPTING:
        _adopt_only(p, e)
        return
    if p.step.model.state not in _INTAKE_OPEN:
        p.fx.emit(fx.Nack(e.tag, requeue=True))
        p.fx.log("info", "delivery-returned", "intake is closed; delivery requeued")
        return
    frags = p.fragments
    inp = Input(serial=frags.new_serial(), state=INPUT.initial, tag=e.tag, body=e.body)
    try:
        inp.desc = parse_remote(e.body)
        inp.fragment_id = inp.desc.fragment_id
    except InvalidMessage as err:
        frags.add(INPUT, inp)
        dead_letter(p, inp, err.reason, str(err))
        return
    frags.add(INPUT, inp)
    fid = inp.fragment_id
    if e.redelivered:
        p.fx.log("info", "redelivered", "input was delivered before", fid)
    twin = frags.input_named(fid)
    if twin is not None:
        _on_duplicate(p, inp, twin)
        return
    frags.index(inp)
    leftover = p.restart.take_leftover(fid)
    known = p.restart.take_input(fid)
    if known is not None:
        resumable = hashlib.sha256(e.body).hexdigest() == known[0]
        if resumable:
            resume_input(p, inp, known[1], leftover)
        else:
            p.fx.log("warning", "resume-mismatch", "the killed sidecar's journal knows "
                     "this id with another body; processed again", fid)
        p.restart.prune()
        if resumable:
            return
    p.ids.reset(fid)  # processed again: its outputs get the same ids
    start_downloads(p, inp)
    if leftover is not None:
        # The same paths (and .part files) are downloaded again now and deleted at
        # done_with with their directories; only files of another shape go now.
        reused = {*inp.paths, *(f"{path}.part" for path in inp.paths)}
        extra = tuple(path for path in leftover[0] if path not in reused)
        if extra:
            p.fx.emit(fx.DeleteFiles(extra))


def _adopt(p: Parts, twin: Input, tag: int) -> None:
    twin.tag = tag
    p.fx.log("info", "redelivery-adopted", f"delivered again after the connection was "
             f"lost; the input in flight ({twin.state}) takes the new delivery",
             twin.fragment_id)
    progress(p, twin)


def _adopt_only(p: Parts, e: ev.Delivered) -> None:
    """After the input ended: a delivery of an input still here with a void tag takes
    it back; anything else goes back to the queue, and consuming stops."""
    try:
        fid = parse_remote(e.body).fragment_id
    except InvalidMessage:
        fid = ""
    twin = p.fragments.input_named(fid)
    if twin is not None and not twin.tag and twin.body == e.body:
        _adopt(p, twin, e.tag)
        if not any(not i.tag for i in p.fragments.inputs.values()):
            p.intake.stop_adopting()
        return
    p.fx.emit(fx.Nack(e.tag, requeue=True))
    p.fx.log("info", "delivery-returned", "intake is closed; delivery requeued")
    p.intake.stop_adopting()


def _on_duplicate(p: Parts, inp: Input, twin: Input) -> None:
    """A second delivery of an id in flight: the broker still holds the first copy, or
    (its tag void after a lost connection) it is the first copy, delivered again."""
    if not twin.tag and twin.body == inp.body:
        p.fragments.forget(inp)
        _adopt(p, twin, inp.tag)
        return
    if twin.body == inp.body:
        p.fx.log("warning", "duplicate-delivery",
                 "same fragment delivered twice; the copy is acked, the original "
                 "is processed", inp.fragment_id)
        p.fx.emit(fx.Ack(inp.tag))
        p.fragments.forget(inp)
        return
    dead_letter(p, inp, "conflicting-duplicate",
                "another fragment with this id and different content is in flight")


def on_queue_inspected(p: Parts, e: ev.QueueInspected) -> None:
    if p.intake.state in _ADOPTING:
        if e.ready == 0:  # what is not back here is with another consumer
            p.intake.stop_adopting()
        else:
            p.step.set_deadline("inspect", p.fx.now + p.cfg.queue_poll_interval)
        return
    if p.step.state != StepState.DRAINING_QUEUE:
        return
    if e.ready == 0:
        p.intake.end()
        if not p.intake.cancelling:  # intake was paused: no consumer left
            p.step.fire(StepEvent.CONSUMER_STOPPED)
    else:
        p.step.set_deadline("inspect", p.fx.now + p.cfg.queue_poll_interval)


def on_consumer_stopped(p: Parts, _: ev.ConsumerStopped) -> None:
    """Our basic.cancel is confirmed: of a pause, of the adoption, or of the input."""
    was = p.intake.consumer_stopped()
    if was == IS.ENDING and p.step.state == StepState.DRAINING_QUEUE:
        p.step.fire(StepEvent.CONSUMER_STOPPED)


def on_consumer_cancelled(p: Parts, _: ev.ConsumerCancelledByBroker) -> None:
    p.intake.consumer_cancelled()
    stop(p, EXIT_FATAL, "consumer-cancelled",
         "the broker cancelled the consumer (input queue deleted?)")


def on_broker_lost(p: Parts, e: ev.BrokerLost) -> None:
    """The broker requeued every unacked delivery of the lost connection: their tags are
    void. The work in flight goes on (downloads, the transformation, uploads); publishes
    wait for the reconnect; a void input that finishes waits for its delivery to come
    back (it is then adopted), or for the end of the input (another consumer has it).
    """
    if not e.retrying:
        _on_broker_gone(p, e)
        return
    ending = p.intake.state == IS.ENDING  # the consumer is gone anyway
    p.intake.lost()
    void = 0
    for inp in list(p.fragments.inputs.values()):
        if not inp.tag or inp.state in INPUT.terminal:
            continue
        inp.tag = 0
        void += 1
        if inp.state == InputState.DEAD_LETTERING:  # the broker has the original: start again
            p.publisher.drop_dead_letter(inp.serial)
            release(p, inp)
    p.fx.log("warning", "broker-lost",
             f"{e.error}; reconnecting. {void} unacked input(s) went back to the queue "
             f"(kept here until delivered again); {len(p.publisher.publishes)} unconfirmed "
             "publish(es) will be sent again")
    if ending and p.step.state == StepState.DRAINING_QUEUE:
        p.step.fire(StepEvent.CONSUMER_STOPPED)


def _on_broker_gone(p: Parts, e: ev.BrokerLost) -> None:
    """Reconnecting failed for good: nothing can be acked or published any more; the
    broker has every unacked input. Give up the rest, leave the volume clean, exit 1."""
    p.intake.lost()
    for inp in list(p.fragments.inputs.values()):
        inp.tag = 0
        if inp.state not in INPUT.terminal:
            release(p, inp)
    p.publisher.clear()
    for out in list(p.fragments.outputs.values()):
        if out.state == OutputState.RECEIVED:  # not uploaded: its files would stay behind
            local = tuple(f.path for f in out.files if inside(p.cfg.volume, f.path))
            if local:
                p.fx.emit(fx.DeleteFiles(local))
        p.fragments.fire(OUTPUT, out, OutputEvent.FAIL)
        p.fragments.forget(out)
    stop(p, EXIT_FATAL, "broker-unreachable",
         f"{e.error}; exiting: unacked inputs return to the queue")
