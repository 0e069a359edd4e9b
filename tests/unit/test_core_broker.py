"""Core: the broker connection is lost and comes back (docs/reliability.md, case 3).

On a loss every delivery tag of the old channel is void (the broker requeues those
messages; they may come back here or go to another consumer) and every unconfirmed publish
is of unknown fate. The work in flight goes on; publishes wait; on BrokerReady they are sent
again and consuming restarts; a redelivered input still in flight takes the new tag; an
input whose delivery never comes back is released when the input ends.
"""

from __future__ import annotations

import pytest
from unit_driver import (
    DEAD_QUEUE,
    IN_BUCKET,
    LINEAGE_QUEUE,
    OUT_QUEUE,
    VOLUME,
    Driver,
    fid,
    log_codes,
    of,
    remote_body,
)

from sidecar.core import effects as fx
from sidecar.core import events as ev

A, B, C = fid("a"), fid("b"), fid("c")
LOST = ev.BrokerLost("connection reset by peer")


def started(drv: Driver) -> Driver:
    drv.start()
    drv.connect()
    return drv


def settled(drv: Driver) -> list[fx.Effect]:
    return of(drv.effects, fx.Ack, fx.Nack)


def publishes(effects: list[fx.Effect], queue: str = OUT_QUEUE) -> list[fx.Publish]:
    return [p for p in of(effects, fx.Publish) if p.queue == queue]


def test_a_loss_keeps_the_work_in_flight_and_settles_nothing(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)  # dispatched
    [upload] = drv.output([A])
    drv.done(A)  # processed, its output uploading
    [download] = drv.deliver_fragment(8, B)  # downloading
    out = drv.feed(LOST)
    assert of(out, fx.Ack, fx.Nack, fx.Publish, fx.StopConsuming, fx.Exit) == []
    assert log_codes(out) == ["broker-lost"]
    assert (drv.state(A), drv.state(B)) == ("processed", "received")
    assert [i.tag for i in drv.core.inputs.values()] == [0, 0]  # void
    assert not drv.core.consuming and not drv.core.broker_up
    # the work goes on: the download lands, the upload lands; nothing is published yet
    out = drv.feed(ev.FileDownloaded(download.input_id, 0, 1))
    assert [f.payload for f in of(out, fx.SendFrame)]  # dispatched to the transformation
    out = drv.upload([upload])
    assert of(out, fx.Publish) == []
    assert of(out, fx.DeleteFiles) == [fx.DeleteFiles((f"{VOLUME}/output/o.jpg",))]
    assert len(drv.core.publishes) == 1


def test_unconfirmed_publishes_are_sent_again_when_the_broker_is_back(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    [descriptor] = publishes(drv.upload(drv.output([A])))  # sent, never confirmed
    drv.done(A)
    drv.ready_input(8, B)
    [late] = drv.output([B])
    drv.feed(LOST)
    drv.upload([late])  # uploaded while the broker is away: waits
    out = drv.feed(ev.BrokerReady())
    again = publishes(out)
    assert (again[0].publish_id, again[0].body, again[0].message_id) == (
        descriptor.publish_id, descriptor.body, descriptor.message_id)  # the same bytes
    assert len(again) == 2 and "broker-reconnected" in log_codes(out)
    assert of(out, fx.StartConsuming) == [fx.StartConsuming(4)]
    # confirms of the re-sent publishes drive the outputs on; A still waits for its tag
    for p in again:
        for lineage in of(drv.confirm(p), fx.Publish):
            drv.confirm(lineage)
    assert settled(drv) == [] and drv.state(A) == "published"


def test_a_redelivered_input_in_flight_takes_the_new_tag(drv: Driver) -> None:
    started(drv)
    body = remote_body(A)
    drv.deliver(7, body)
    drv.download(A)  # dispatched
    drv.feed(LOST)
    drv.feed(ev.BrokerReady())
    out = drv.feed(ev.Delivered(1, body, redelivered=True))  # the new channel's tag 1
    assert of(out, fx.DownloadFile, fx.SendFrame, fx.Ack, fx.Nack) == []
    assert "redelivery-adopted" in log_codes(out)
    assert len(drv.core.inputs) == 1 and drv.state(A) == "dispatched"
    drv.record(drv.output([A]))
    assert of(drv.done(A), fx.Ack) == [fx.Ack(1)]
    assert settled(drv) == [fx.Ack(1)]  # never the void tag 7
    drv.assert_files_deleted_once()


def test_a_redelivery_of_an_input_finished_meanwhile_is_acked_at_once(drv: Driver) -> None:
    started(drv)
    body = remote_body(A)
    drv.deliver(7, body)
    drv.download(A)
    [upload] = drv.output([A])
    drv.feed(LOST)
    drv.done(A)
    drv.upload([upload])
    out = drv.feed(ev.BrokerReady())
    for lineage in of(drv.confirm(publishes(out)[0]), fx.Publish):
        drv.confirm(lineage)
    assert drv.state(A) == "published" and settled(drv) == []  # waits for its delivery
    out = drv.feed(ev.Delivered(3, body, redelivered=True))
    assert of(out, fx.Ack, fx.Nack) == [fx.Ack(3)]
    assert drv.state(A) == "acked" and drv.core.inputs == {}


def test_a_redelivery_with_another_body_is_a_conflicting_duplicate(drv: Driver) -> None:
    started(drv)
    drv.deliver(7, remote_body(A))
    drv.download(A)
    drv.feed(LOST)
    drv.feed(ev.BrokerReady())
    other = remote_body(A, ["other.jpg"])
    out = drv.feed(ev.Delivered(1, other, redelivered=True))
    [dead] = of(out, fx.Publish)
    assert (dead.queue, dict(dead.headers)["x-iterum-error-class"]) == (
        DEAD_QUEUE, "conflicting-duplicate")
    assert drv.confirm(dead) == [fx.Ack(1)]
    assert drv.state(A) == "dispatched" and drv.inputs[A].tag == 0


def test_inputs_whose_delivery_never_comes_back_are_released_when_the_input_ends(
        drv: Driver) -> None:
    """Another replica got the redelivery: the input finished here is not acked (its tag is
    void), it does not block the end, and its files are deleted once."""
    started(drv)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    [upload_a] = drv.output([A])
    drv.feed(LOST)
    drv.done(A)
    out = drv.feed(ev.BrokerReady())
    drv.record([upload_a])
    for p in publishes(out):  # A's descriptor had not been sent before the loss
        for lineage in of(drv.confirm(p), fx.Publish):
            drv.confirm(lineage)
    assert drv.state(A) == "published"
    out = drv.end_input()
    assert "released" in log_codes(out)
    assert drv.state(A) == "requeued"
    assert drv.state(B) == "dispatched"  # still being processed here
    drv.record(drv.output([B]))
    drv.done(B)  # finishes after the end of the input: released at once
    assert drv.state(B) == "requeued"
    out = drv.kill()
    assert [e.code for e in of(out, fx.Exit)] == [0]
    assert settled(drv) == []
    drv.assert_files_deleted_once()


def test_a_dead_letter_in_flight_at_the_loss_is_not_sent_again(drv: Driver) -> None:
    """The broker has the original again; whoever gets it dead-letters it (once)."""
    started(drv)
    drv.deliver(7, b"not json")
    assert len(drv.core.publishes) == 1
    out = drv.feed(LOST)
    assert drv.core.publishes == {} and drv.core.inputs == {}
    assert of(out, fx.Nack, fx.Ack) == []
    out = drv.feed(ev.BrokerReady())
    assert of(out, fx.Publish) == []
    [dead] = of(drv.deliver(1, b"not json"), fx.Publish)  # delivered again: dead-lettered
    assert drv.confirm(dead) == [fx.Ack(1)]


def test_a_void_input_whose_download_fails_is_released(drv: Driver) -> None:
    started(drv)
    [download] = drv.deliver_fragment(7, A)
    drv.feed(LOST)
    out = drv.feed(ev.DownloadFailed(download.input_id, 0, "missing-object", "gone", False))
    assert of(out, fx.Publish, fx.Ack, fx.Nack) == []  # not dead-lettered without its tag
    assert drv.state(A) == "requeued"
    drv.assert_files_deleted_once()


def test_a_loss_after_the_input_ended_takes_the_requeued_deliveries_back(drv: Driver) -> None:
    """The queue was empty, the end-of-input cancel in flight: the loss put A's delivery back
    in the queue, where nobody would take it. After the reconnect the sidecar consumes once
    more, only to adopt it, and stops."""
    started(drv)
    body = remote_body(A)
    drv.deliver(7, body)
    drv.download(A)
    drv.feed(ev.UpstreamFinished())
    out = drv.feed(ev.QueueInspected(0))
    assert fx.StopConsuming() in out
    out = drv.feed(LOST)  # the cancel-ok will never come: the input has ended
    assert drv.core.step.state == "kill_sent"
    assert [f.payload for f in of(out, fx.SendFrame)] == [b'{"status":"complete"}']
    drv.upload(drv.output([A]))
    drv.done(A)  # finished while the broker is away: its output waits for the broker
    out = drv.feed(ev.BrokerReady())
    assert of(out, fx.StartConsuming, fx.InspectQueue) == [fx.StartConsuming(4),
                                                           fx.InspectQueue()]
    [descriptor] = of(out, fx.Publish)
    out = drv.feed(ev.Delivered(1, body, redelivered=True))
    assert of(out, fx.Ack, fx.StopConsuming) == [fx.StopConsuming()]  # all taken back
    [lineage] = of(drv.confirm(descriptor), fx.Publish)
    assert of(drv.confirm(lineage), fx.Ack) == [fx.Ack(1)]
    drv.feed(ev.QueueInspected(0))
    drv.feed(ev.ConsumerStopped())
    out = drv.kill()
    assert [e.code for e in of(out, fx.Exit)] == [0]
    assert settled(drv) == [fx.Ack(1)]


def test_after_the_input_ended_other_deliveries_go_back_and_stop_the_consumer(
        drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.end_input()
    drv.feed(LOST)
    drv.feed(ev.BrokerReady())
    out = drv.deliver_fragment(1, B)
    assert of(out, fx.Nack, fx.StopConsuming, fx.DownloadFile) == [
        fx.Nack(1, requeue=True), fx.StopConsuming()]
    drv.feed(ev.ConsumerStopped())
    drv.record(drv.output([A]))
    drv.done(A)  # its delivery went elsewhere: released when it finishes
    assert drv.state(A) == "requeued"
    assert [e.code for e in of(drv.kill(), fx.Exit)] == [0]


def test_after_the_input_ended_an_empty_queue_ends_the_adopting(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.end_input()
    drv.feed(LOST)
    drv.done(A)
    drv.feed(ev.BrokerReady())
    assert of(drv.feed(ev.QueueInspected(0)), fx.StopConsuming) == [fx.StopConsuming()]
    assert drv.state(A) == "published"  # until the cancel is confirmed
    drv.feed(ev.ConsumerStopped())
    assert drv.state(A) == "requeued"
    assert settled(drv) == []


def test_a_loss_while_draining_the_queue_inspects_it_again(drv: Driver) -> None:
    started(drv)
    drv.feed(ev.UpstreamFinished())  # InspectQueue in flight
    drv.feed(LOST)
    assert of(drv.after(5), fx.InspectQueue) == []  # no inspection without a broker
    out = drv.feed(ev.BrokerReady())
    assert of(out, fx.StartConsuming, fx.InspectQueue) == [fx.StartConsuming(4),
                                                           fx.InspectQueue()]
    assert drv.core.step.state == "draining_queue"
    drv.feed(ev.QueueInspected(0))
    drv.feed(ev.ConsumerStopped())
    assert drv.core.step.state == "kill_sent"


def test_paused_intake_stays_paused_across_a_reconnect(make_driver) -> None:
    drv = make_driver(pause_when_orphaned=True)
    started(drv)
    drv.disconnect()  # the transformation is gone: intake paused
    drv.feed(ev.ConsumerStopped())
    drv.feed(LOST)
    out = drv.feed(ev.BrokerReady())
    assert of(out, fx.StartConsuming) == []
    assert drv.core.paused == ("transformation-absent",)
    out = drv.connect(3, 4)
    assert of(out, fx.StartConsuming) == [fx.StartConsuming(4)]


def test_a_pause_cancel_lost_with_the_connection_does_not_block_the_resume(
        make_driver) -> None:
    drv = make_driver(pause_when_orphaned=True)
    started(drv)
    out = drv.disconnect()
    assert fx.StopConsuming() in out and drv.core.cancelling
    drv.feed(LOST)
    drv.feed(ev.BrokerReady())
    out = drv.connect(3, 4)
    assert of(out, fx.StartConsuming) == [fx.StartConsuming(4)]


def test_a_second_broker_ready_changes_nothing(drv: Driver) -> None:
    started(drv)
    assert drv.feed(ev.BrokerReady()) == []


def test_losses_before_the_first_ready_are_harmless(drv: Driver) -> None:
    drv.feed(LOST)
    out = drv.start()
    assert of(out, fx.StartConsuming) == [fx.StartConsuming(4)]


@pytest.mark.parametrize("losses", [1, 3])
def test_every_input_is_acked_once_on_a_live_tag_whatever_the_losses(drv: Driver,
                                                                     losses: int) -> None:
    """Losses at every stage of one fragment; each comes back with a new tag."""
    started(drv)
    body = remote_body(A)
    drv.deliver(1, body)
    tag = 1
    steps = [lambda: drv.download(A), lambda: drv.output([A]), lambda: drv.done(A)]
    uploads: list[fx.Effect] = []
    for i, step in enumerate(steps):
        uploads += step()
        if i < losses:
            drv.feed(LOST)
            drv.feed(ev.BrokerReady())
            tag += 1
            drv.feed(ev.Delivered(tag, body, redelivered=True))
    drv.record(uploads)
    assert settled(drv) == [fx.Ack(tag)]
    drv.assert_files_deleted_once()


def test_the_lineage_waits_for_the_descriptor_across_a_loss(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    [descriptor] = publishes(drv.upload(drv.output([A])))
    drv.feed(LOST)
    out = drv.feed(ev.BrokerReady())
    [again] = of(out, fx.Publish)
    assert again.queue == OUT_QUEUE
    [lineage] = of(drv.confirm(again), fx.Publish)
    assert lineage.queue == LINEAGE_QUEUE
    assert drv.confirm(descriptor) == []  # a stale confirm of the same id: already done


def test_input_files_of_released_inputs_are_deleted_once(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A, names=["1.jpg", "2.jpg"])
    drv.feed(LOST)
    drv.done(A)
    drv.feed(ev.BrokerReady())
    drv.end_input()
    drv.kill()
    deleted = [p for d in of(drv.effects, fx.DeleteFiles) for p in d.paths]
    assert sorted(deleted) == [f"{VOLUME}/{IN_BUCKET}/{A}/1.jpg", f"{VOLUME}/{IN_BUCKET}/{A}/2.jpg"]
