"""Core: the end of the stream (§12), a crashing or early-ending transformation (§16.5),
SIGTERM, fatal errors and a lost broker; and the exit codes that follow."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from unit_driver import (
    FTS,
    IN_BUCKET,
    KILL_FRAME,
    TTS,
    VOLUME,
    Driver,
    fid,
    log_codes,
    of,
)

from sidecar.core import effects as fx
from sidecar.core import events as ev

A, B, C = fid("a"), fid("b"), fid("c")


def started(drv: Driver, connect: bool = True) -> Driver:
    drv.start()
    if connect:
        drv.connect()
    return drv


def frames(effects: list[fx.Effect]) -> list[tuple[int, str]]:
    """(conn, 'kill' or the fragment id) of every SendFrame, in order."""
    out = []
    for f in of(effects, fx.SendFrame):
        out.append((f.conn, "kill" if f.payload == KILL_FRAME
                    else json.loads(f.payload)["metadata"]["fragment_id"]))
    return out


def exits(effects: list[fx.Effect]) -> list[int]:
    return [e.code for e in of(effects, fx.Exit)]


def without_logs_or_exit(effects: list[fx.Effect]) -> list[fx.Effect]:
    return [e for e in effects if not isinstance(e, fx.Log | fx.Exit)]


def step_history(drv: Driver) -> list[str]:
    """The states the step machine entered, in order (from the transitions journal)."""
    return [t.dest for t in drv.transitions if t.machine == "step"]


# --- the normal end of the stream -------------------------------------------------------------


def test_full_shutdown_chain(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)

    assert drv.feed(ev.UpstreamFinished()) == [fx.InspectQueue()]
    assert drv.core.step.state == "draining_queue"

    assert drv.feed(ev.QueueInspected(ready=3)) == []
    due = drv.clock + drv.core.cfg.queue_poll_interval
    assert drv.core.next_deadline() == pytest.approx(due)
    assert drv.feed(ev.Tick(), at=due - 0.01) == []  # too early
    assert drv.feed(ev.Tick(), at=due) == [fx.InspectQueue()]
    assert drv.core.next_deadline() is None

    assert drv.feed(ev.QueueInspected(ready=0)) == [fx.StopConsuming()]
    assert drv.core.step.state == "draining_queue"
    # a delivery the client library still had buffered is processed normally
    drv.deliver_fragment(8, B)
    assert drv.state(B) == "received"

    assert drv.feed(ev.ConsumerStopped()) == []  # B is not dispatched yet: no kill
    assert drv.core.step.state == "input_ended"
    assert frames(drv.download(B)) == [(TTS, B), (TTS, "kill")]  # the kill after the last
    assert drv.core.step.state == "kill_sent"

    uploads = drv.output([A])
    drv.done(A)
    drv.done(B)  # 1→0
    assert of(drv.effects, fx.Ack) == [fx.Ack(8)]
    assert drv.kill() == []
    assert drv.core.step.state == "transformation_done"

    out = drv.record(uploads)
    assert of(out, fx.Ack) == [fx.Ack(7)]
    assert isinstance(out[-1], fx.Exit) and out[-1].code == 0
    assert of(out, fx.DeleteFiles)[-1] == fx.DeleteFiles((), (f"{VOLUME}/{IN_BUCKET}",))
    assert step_history(drv) == ["consuming", "draining_queue", "input_ended", "kill_sent",
                                 "transformation_done", "exited"]
    assert drv.core.exit_code == 0
    # after the exit the core does nothing more
    assert drv.deliver_fragment(9, C) == []
    assert drv.feed(ev.Tick(), at=drv.clock + 1000) == []
    drv.assert_files_deleted_once()


def test_idle_step_exits_zero_after_the_kill_handshake(drv: Driver) -> None:
    started(drv)
    out = drv.end_input()
    assert of(out, fx.InspectQueue, fx.StopConsuming) == [fx.InspectQueue(), fx.StopConsuming()]
    assert frames(out) == [(TTS, "kill")]
    assert of(out, fx.SendFrame)[0].payload == b'{"status":"complete"}'
    out = drv.kill()
    assert exits(out) == [0]


def test_kill_goes_to_every_tts_connection_and_to_later_ones(drv: Driver) -> None:
    started(drv, connect=False)
    drv.feed(ev.Connected(5, "tts"))
    drv.feed(ev.Connected(6, "tts"))
    drv.feed(ev.Connected(7, "fts"))
    assert sorted(frames(drv.end_input())) == [(5, "kill"), (6, "kill")]
    assert frames(drv.feed(ev.Connected(8, "tts"))) == [(8, "kill")]
    assert frames(drv.feed(ev.Connected(9, "fts"))) == []
    assert len(of(drv.effects, fx.SendFrame)) == 3  # nobody gets it twice


def test_kill_waits_for_a_tts_connection_and_follows_the_last_fragment(drv: Driver) -> None:
    started(drv, connect=False)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    assert frames(drv.end_input()) == []
    assert drv.core.step.state == "input_ended"
    out = drv.feed(ev.Connected(5, "tts"))
    assert frames(out) == [(5, A), (5, B), (5, "kill")]


def test_kill_waits_for_running_downloads(drv: Driver) -> None:
    started(drv)
    downloads = of(drv.deliver_fragment(7, A, ["1.jpg", "2.jpg"]), fx.DownloadFile)
    assert frames(drv.end_input()) == []
    assert frames(drv.feed(ev.FileDownloaded(downloads[0].input_id, 0, 1))) == []
    assert frames(drv.feed(ev.FileDownloaded(downloads[0].input_id, 1, 1))) == [
        (TTS, A), (TTS, "kill")]


def test_kill_is_not_held_back_by_dead_lettered_input(drv: Driver) -> None:
    started(drv)
    drv.deliver(7, b"garbage")
    assert frames(drv.end_input()) == [(TTS, "kill")]
    assert exits(drv.kill()) == []  # the dead-letter publish is not confirmed yet
    [dead] = of(drv.effects, fx.Publish)
    out = drv.confirm(dead)
    assert of(out, fx.Ack) == [fx.Ack(7)]
    assert exits(out) == [0]


def test_upstream_finished_before_the_broker_is_ready(drv: Driver) -> None:
    assert drv.feed(ev.UpstreamFinished()) == []
    assert drv.start() == [fx.StartConsuming(4), fx.InspectQueue()]
    assert drv.core.step.state == "draining_queue"


def test_queue_inspection_outside_draining_is_ignored(drv: Driver) -> None:
    started(drv)
    assert drv.feed(ev.QueueInspected(0)) == []
    assert drv.feed(ev.ConsumerStopped()) == []
    assert drv.core.step.state == "consuming"


# --- the transformation ends with an input unfinished -----------------------------------------


def test_kill_with_an_unfinished_input_requeues_it_after_fts_closes(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    drv.end_input()
    drv.done(B)
    assert drv.kill() == []  # the fts connection is still open: done_with may still come
    out = drv.feed(ev.Disconnected(FTS, "fts"))
    assert of(out, fx.Nack, fx.Ack) == [fx.Nack(7, requeue=True)]
    assert exits(out) == [3]
    assert "requeued-unfinished" in log_codes(out)
    assert drv.history(A)[-1] == "requeued"
    drv.assert_files_deleted_once()


def test_kill_with_an_unfinished_input_and_fts_kept_open(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.end_input()
    drv.kill()
    grace = drv.core.cfg.transformation_grace
    assert drv.after(grace - 1) == []
    out = drv.after(1)
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert exits(out) == [3]


def test_done_with_after_the_kill_on_the_same_connection_still_counts(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.end_input()
    drv.kill()
    out = drv.done(A)
    assert of(out, fx.Ack) == [fx.Ack(7)]
    assert exits(out) == [0]


# --- the transformation crashes (§16.5) -------------------------------------------------------


def test_crash_gives_unprocessed_inputs_back_after_the_grace(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    uploads = drv.output([A])
    drv.done(A)  # A is processed, its output is still uploading
    out = drv.disconnect()
    assert log_codes(out) == ["transformation-disconnected"]
    grace = drv.core.cfg.transformation_grace
    assert drv.core.next_deadline() == pytest.approx(drv.clock + grace)
    assert drv.after(grace - 0.5) == []
    out = drv.after(0.5)
    assert of(out, fx.Nack, fx.Ack) == [fx.Nack(8, requeue=True)]
    assert fx.StopConsuming() in out
    assert "transformation-lost" in log_codes(out)
    assert exits(out) == []  # A's output is still on its way
    assert drv.core.step.state == "stopping"
    out = drv.record(uploads)
    assert of(out, fx.Ack) == [fx.Ack(7)]
    assert exits(out) == [3]
    drv.assert_files_deleted_once()


def test_crash_with_nothing_in_flight_still_exits_3(drv: Driver) -> None:
    started(drv)
    drv.disconnect()
    assert exits(drv.after(drv.core.cfg.transformation_grace - 0.5)) == []
    assert exits(drv.after(0.5)) == [3]


# --- the transformation never connects ---------------------------------------------------------

CONNECT = 30.0  # SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT in these tests


def test_never_connecting_gives_the_inputs_back_and_exits_3(
        make_driver: Callable[..., Driver]) -> None:
    drv = started(make_driver(transformation_connect_timeout=CONNECT), connect=False)
    assert drv.core.next_deadline() == pytest.approx(drv.clock + CONNECT)
    drv.ready_input(7, A)  # downloaded, waiting for a tts connection that never comes
    [download] = drv.deliver_fragment(8, B)  # still downloading at the deadline
    assert drv.after(CONNECT - 1) == []
    out = drv.after(1)
    assert "transformation-never-connected" in log_codes(out)
    assert fx.StopConsuming() in out
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True), fx.Nack(8, requeue=True)]
    assert exits(out) == []  # B's download is still writing its file
    out = drv.feed(ev.FileDownloaded(download.input_id, 0, 1))
    assert exits(out) == [3]
    assert "SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT" in of(out, fx.Exit)[0].reason
    assert of(drv.effects, fx.SendFrame, fx.Ack) == []
    drv.assert_files_deleted_once()


@pytest.mark.parametrize("first", ["tts", "fts"])
def test_a_first_connection_in_time_clears_the_deadline(
        make_driver: Callable[..., Driver], first: str) -> None:
    drv = started(make_driver(transformation_connect_timeout=CONNECT), connect=False)
    drv.ready_input(7, A)
    drv.after(CONNECT - 1, ev.Connected(TTS if first == "tts" else FTS, first))
    assert "connect" not in drv.core.deadlines
    assert exits(drv.after(CONNECT)) == []
    assert drv.core.step.state == "consuming"


def test_connected_before_the_broker_was_ready_sets_no_deadline(
        make_driver: Callable[..., Driver]) -> None:
    drv = make_driver(transformation_connect_timeout=CONNECT)
    drv.connect()
    drv.start()
    assert "connect" not in drv.core.deadlines


def test_a_crash_after_connecting_is_the_grace_rule_not_the_connect_deadline(
        make_driver: Callable[..., Driver]) -> None:
    drv = started(make_driver(transformation_connect_timeout=CONNECT,
                              transformation_grace=100.0))
    drv.ready_input(7, A)
    drv.disconnect()
    assert exits(drv.after(CONNECT + 1)) == []  # still within the grace
    out = drv.after(100.0)
    assert "transformation-lost" in log_codes(out)
    assert "transformation-never-connected" not in log_codes(drv.effects)


def test_no_connect_deadline_when_switched_off(drv: Driver) -> None:
    started(drv, connect=False)
    assert drv.core.cfg.transformation_connect_timeout == 0
    assert drv.core.next_deadline() is None


def test_sigterm_before_the_connect_deadline_still_exits_0(
        make_driver: Callable[..., Driver]) -> None:
    drv = started(make_driver(transformation_connect_timeout=CONNECT), connect=False)
    drv.ready_input(7, A)
    out = drv.feed(ev.ShutdownRequested("SIGTERM"))
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert exits(out) == [0]


@pytest.mark.parametrize("event", [ev.ShutdownRequested("SIGTERM"), ev.Fatal("x", "boom"),
                                   ev.ConsumerCancelledByBroker(), ev.BrokerLost("reset"),
                                   ev.BrokerLost("gone", retrying=False)],
                         ids=lambda e: f"{type(e).__name__}-{getattr(e, 'retrying', '')}")
def test_stopping_after_the_kill_handshake_is_a_valid_transition(drv: Driver,
                                                                 event: ev.Event) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.output([A])  # keeps the sidecar busy after the handshake
    drv.done(A)
    drv.end_input()
    drv.kill()
    assert drv.core.step.state == "transformation_done"
    out = drv.feed(event)
    assert "invalid-transition" not in log_codes(out)


def test_reconnect_within_the_grace_redispatches(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    drv.done(B)
    first = of(drv.effects, fx.SendFrame)[0]
    drv.disconnect()
    out = drv.after(30, ev.Connected(3, "tts"))
    [again] = of(out, fx.SendFrame)
    assert (again.conn, again.payload) == (3, first.payload)
    assert "redispatched" in log_codes(out)
    assert [t.trigger for t in drv.transitions if t.fragment == A][-1] == "redispatch"
    assert drv.state(A) == "dispatched"
    drv.feed(ev.Connected(4, "fts"))
    assert drv.after(drv.core.cfg.transformation_grace) == []  # the grace was cancelled
    assert of(drv.done(A, conn=4), fx.Ack) == [fx.Ack(7)]
    assert of(drv.effects, fx.Nack) == []


def test_reconnect_fts_first_also_redispatches(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.disconnect()
    drv.after(10, ev.Connected(4, "fts"))
    out = drv.feed(ev.Connected(3, "tts"))
    assert frames(out) == [(3, A)]


def test_reconnect_after_the_kill_was_sent_gets_the_fragment_then_the_kill(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.end_input()
    drv.disconnect()
    out = drv.after(5, ev.Connected(3, "tts"))
    assert frames(out) == [(3, A), (3, "kill")]


def test_outputs_of_a_redispatched_fragment_keep_their_ids(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    before = of(drv.output([A]), fx.UploadFile)
    drv.disconnect()
    drv.after(1, ev.Connected(3, "tts"))
    drv.feed(ev.Connected(4, "fts"))
    after = of(drv.output([A], conn=4), fx.UploadFile)
    assert after[0].key == before[0].key  # §16.15: the re-run overwrites, not duplicates


def test_one_connection_closing_is_not_a_crash(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    out = drv.feed(ev.Disconnected(TTS, "tts"))
    assert out == []
    assert drv.core.next_deadline() is None


# --- the transformation ends early ------------------------------------------------------------


def test_early_kill_gives_inputs_back_and_exits_3(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)  # dispatched
    drv.ready_input(8, B)
    drv.done(B)  # acked
    [download] = drv.deliver_fragment(9, C)  # still downloading
    out = drv.kill()
    assert "early-kill" in log_codes(out)
    assert fx.StopConsuming() in out
    assert sorted(n.tag for n in of(out, fx.Nack)) == [7, 9]
    assert exits(out) == []  # C's download is still writing to the volume
    out = drv.feed(ev.FileDownloaded(download.input_id, 0, 1))
    assert of(out, fx.DeleteFiles)[0] == fx.DeleteFiles(
        (f"{VOLUME}/{IN_BUCKET}/{C}/x.jpg",), (f"{VOLUME}/{IN_BUCKET}/{C}",))
    assert exits(out) == [3]
    assert of(drv.effects, fx.SendFrame)[-1].payload != KILL_FRAME  # no kill was due
    drv.assert_files_deleted_once()


def test_kill_after_upstream_finished_but_before_ours_is_early(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.feed(ev.UpstreamFinished())
    out = drv.kill()
    assert "early-kill" in log_codes(out)
    assert exits(out) == [3]


# --- SIGTERM ----------------------------------------------------------------------------------


def test_shutdown_lets_dispatched_work_finish(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    [download] = drv.deliver_fragment(8, B)
    out = drv.feed(ev.ShutdownRequested("SIGTERM"))
    assert fx.StopConsuming() in out
    assert "shutdown-requested" in log_codes(out)
    assert of(out, fx.Nack) == [fx.Nack(8, requeue=True)]  # not dispatched yet
    assert drv.core.step.state == "stopping"
    assert without_logs_or_exit(drv.deliver_fragment(9, C)) == [fx.Nack(9, requeue=True)]
    assert of(drv.done(A), fx.Ack) == [fx.Ack(7)]
    out = drv.feed(ev.FileDownloaded(download.input_id, 0, 1))
    assert of(out, fx.SendFrame) == []
    assert exits(out) == [0]
    drv.assert_files_deleted_once()


def test_shutdown_grace_gives_the_rest_back(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.feed(ev.ShutdownRequested("SIGTERM"))
    grace = drv.core.cfg.shutdown_grace
    assert drv.after(grace - 0.1) == []
    out = drv.after(0.1)
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert exits(out) == [0]
    drv.assert_files_deleted_once()


def test_shutdown_without_a_transformation_gives_everything_back(
        make_driver: Callable[..., Driver]) -> None:
    drv = started(make_driver())
    drv.ready_input(7, A)
    drv.disconnect()
    out = drv.feed(ev.ShutdownRequested("SIGTERM"))
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert exits(out) == [0]


def test_shutdown_lets_gated_outputs_finish_within_the_grace(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    drv.feed(ev.ShutdownRequested("SIGTERM"))
    out = drv.record(uploads)
    assert of(out, fx.Ack) == [fx.Ack(7)]
    assert exits(out) == [0]


def test_shutdown_grace_gives_back_an_input_whose_output_is_not_stored(drv: Driver) -> None:
    """Processed, but its output is still uploading when the grace ends: the input goes
    back (the redelivery makes the output again) and the sidecar exits 0 at once, instead
    of waiting out the storage retries past the pod's termination grace."""
    started(drv)
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    drv.feed(ev.ShutdownRequested("SIGTERM"))
    out = drv.after(drv.core.cfg.shutdown_grace)
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert of(out, fx.Ack, fx.Publish) == []
    assert "output-abandoned" in log_codes(out)
    [upload] = of(uploads, fx.UploadFile)
    assert fx.DeleteFiles((upload.source,)) in out  # the transformation's file, not uploaded
    assert exits(out) == [0]
    assert [t.dest for t in drv.transitions if t.machine == "output"][-1] == "failed"
    assert drv.upload(uploads) == []  # the late completion changes nothing


def test_shutdown_grace_drops_a_descriptor_publish_in_flight(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    [publish] = of(drv.upload(uploads), fx.Publish)  # the descriptor, unconfirmed
    drv.feed(ev.ShutdownRequested("SIGTERM"))
    out = drv.after(drv.core.cfg.shutdown_grace)
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert [d.paths for d in of(out, fx.DeleteFiles) if d.paths] == []  # deleted at upload
    assert exits(out) == [0]
    assert drv.confirm(publish) == []  # a late confirm is ignored


def test_shutdown_grace_still_waits_for_an_output_that_gates_nothing(drv: Driver) -> None:
    """An output sent after done_with holds no input: no redelivery could make it again,
    so it is waited for (its upload is bounded by the storage retries)."""
    started(drv)
    drv.ready_input(7, A)
    assert of(drv.done(A), fx.Ack) == [fx.Ack(7)]  # 1→0 so far: acked at once
    uploads = drv.output([A])  # late
    drv.feed(ev.ShutdownRequested("SIGTERM"))
    out = drv.after(drv.core.cfg.shutdown_grace)
    assert exits(out) == [] and "output-abandoned" not in log_codes(out)
    out = drv.record(uploads)
    assert exits(out) == [0]


def test_shutdown_grace_abandons_running_downloads(drv: Driver) -> None:
    started(drv)
    [download] = drv.deliver_fragment(8, B)
    out = drv.feed(ev.ShutdownRequested("SIGTERM"))
    assert of(out, fx.Nack) == [fx.Nack(8, requeue=True)]
    assert exits(out) == []  # its file is still being written
    out = drv.after(drv.core.cfg.shutdown_grace)
    assert "downloads-abandoned" in log_codes(out)
    assert fx.DeleteFiles((download.dest,), (f"{VOLUME}/{IN_BUCKET}/{B}",)) in out
    assert exits(out) == [0]
    assert drv.feed(ev.FileDownloaded(download.input_id, 0, 1)) == []


# --- fatal errors and the broker --------------------------------------------------------------


def test_fatal_exits_1(drv: Driver) -> None:
    started(drv)
    out = drv.feed(ev.Fatal("manager-unreachable", "gave up after 120s"))
    assert ("error", "manager-unreachable") in [(e.level, e.code) for e in of(out, fx.Log)]
    assert fx.StopConsuming() in out
    assert exits(out) == [1]
    assert "gave up after 120s" in of(out, fx.Exit)[0].reason


def test_fatal_gives_in_flight_inputs_back(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    out = drv.feed(ev.Fatal("config-file-missing", "model.bin never appeared"))
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert exits(out) == [1]


def test_consumer_cancelled_by_the_broker_exits_1(drv: Driver) -> None:
    started(drv)
    out = drv.feed(ev.ConsumerCancelledByBroker())
    assert exits(out) == [1]
    assert of(out, fx.StopConsuming) == []  # there is no consumer left to stop


def test_broker_unreachable_for_good_exits_1_without_acks_or_nacks(drv: Driver) -> None:
    """The adapter gave up reconnecting (SIDECAR_BROKER_RETRY_SECONDS): the broker has every
    unacked input; nothing is acked, nacked or published; the volume is left clean."""
    started(drv)
    drv.ready_input(7, A)  # dispatched
    drv.ready_input(8, B)
    drv.output([B])
    drv.done(B)  # processed, waiting for its output (uploading)
    [download] = drv.deliver_fragment(9, C)  # downloading
    drv.deliver(10, b"garbage")  # dead-lettering
    out = drv.feed(ev.BrokerLost("connection reset", retrying=False))
    assert of(out, fx.Ack, fx.Nack, fx.Publish, fx.StopConsuming) == []
    assert [e.code for e in of(out, fx.Log) if e.level == "error"] == ["broker-unreachable"]
    assert exits(out) == []  # C's download is still writing
    out = drv.feed(ev.FileDownloaded(download.input_id, 0, 1))
    assert exits(out) == [1]
    assert of(drv.effects, fx.Ack, fx.Nack) == []
    assert drv.core.publishes == {}
    # the output whose upload was in flight does not leave its file on the volume
    drv.assert_files_deleted_once()
