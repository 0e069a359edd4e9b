"""Core: what happens when something goes wrong with one fragment (§16.1, §16.4, §16.8).

Invalid bodies and missing objects are dead-lettered (publish, confirm, then ack); transient
storage failures give the input back; refused publishes are retried a bounded number of
times; odd frames from the transformation are logged, never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from unit_driver import (
    DEAD_QUEUE,
    IN_BUCKET,
    OUT_QUEUE,
    STEP,
    TTS,
    VOLUME,
    Driver,
    fid,
    log_codes,
    of,
    remote_body,
    without_logs,
)

from sidecar.core import effects as fx
from sidecar.core import events as ev

A, B = fid("a"), fid("b")


def started(drv: Driver) -> Driver:
    drv.start()
    drv.connect()
    return drv


def in_path(fragment_id: str, name: str = "x.jpg") -> str:
    return f"{VOLUME}/{IN_BUCKET}/{fragment_id}/{name}"


def in_dir(fragment_id: str) -> str:
    return f"{VOLUME}/{IN_BUCKET}/{fragment_id}"


def dead_letters(effects: list[fx.Effect]) -> list[fx.Publish]:
    return [p for p in of(effects, fx.Publish) if p.queue == DEAD_QUEUE]


# --- invalid bodies -------------------------------------------------------------------------


INVALID_BODIES = {
    "invalid-json": b"not json at all",
    "invalid-fragment-id": remote_body("short-id"),
    "unsafe-name": remote_body(A, ["../../etc/passwd"]),
    "invalid-bucket": remote_body(A, bucket="Not_A_Bucket"),
    "duplicate-file": remote_body(A, ["x.jpg", "x.jpg"]),
    "invalid-descriptor": b"[]",
}


@pytest.mark.parametrize(("reason", "body"), list(INVALID_BODIES.items()),
                         ids=list(INVALID_BODIES))
def test_invalid_body_is_dead_lettered_then_acked(drv: Driver, reason: str,
                                                  body: bytes) -> None:
    started(drv)
    out = drv.deliver(7, body)
    assert of(out, fx.DownloadFile, fx.SendFrame, fx.Ack, fx.Nack) == []
    [dead] = of(out, fx.Publish)
    assert (dead.queue, dead.body) == (DEAD_QUEUE, body)  # the original body, unchanged
    headers = dict(dead.headers)
    assert headers["x-iterum-error-class"] == reason
    assert headers["x-iterum-error"]
    assert headers["x-iterum-state"] == "received"
    assert headers["x-iterum-step"] == STEP
    assert headers["x-iterum-attempts"] == "1"
    assert f"dead-letter-{reason}" in log_codes(out)
    [model] = drv.core.inputs.values()
    assert model.state == "dead_lettering"

    assert drv.confirm(dead) == [fx.Ack(7)]
    assert model.state == "dead_lettered"
    assert drv.core.inputs == {}
    # nothing of it ever reaches the transformation, even when the stream ends
    drv.end_input()
    assert [f.payload for f in of(drv.effects, fx.SendFrame)] == [b'{"status":"complete"}']


def test_invalid_body_does_not_block_other_fragments(drv: Driver) -> None:
    started(drv)
    drv.deliver(7, b"{}")
    drv.ready_input(8, A)
    assert of(drv.done(A), fx.Ack) == [fx.Ack(8)]


# --- downloads ----------------------------------------------------------------------------


def test_missing_object_is_dead_lettered(drv: Driver) -> None:
    started(drv)
    body = remote_body(A)
    [download] = drv.deliver(7, body)
    out = drv.feed(ev.DownloadFailed(download.input_id, 0, "missing-object", "NoSuchKey",
                                     transient=False, attempts=1))
    assert of(out, fx.DeleteFiles) == [fx.DeleteFiles((in_path(A),), (in_dir(A),))]
    [dead] = of(out, fx.Publish)
    assert (dead.queue, dead.body) == (DEAD_QUEUE, body)
    assert dict(dead.headers)["x-iterum-error-class"] == "missing-object"
    assert "NoSuchKey" in dict(dead.headers)["x-iterum-error"]
    assert of(out, fx.Ack, fx.Nack, fx.SendFrame) == []
    assert drv.confirm(dead) == [fx.Ack(7)]
    assert drv.history(A) == ["received", "dead_lettering", "dead_lettered"]
    drv.assert_files_deleted_once()


def test_transient_download_failure_gives_the_input_back(drv: Driver) -> None:
    started(drv)
    [download] = drv.deliver_fragment(7, A)
    out = drv.feed(ev.DownloadFailed(download.input_id, 0, "storage-unavailable", "503",
                                     transient=True, attempts=6))
    assert without_logs(out) == [fx.DeleteFiles((in_path(A),), (in_dir(A),)),
                                 fx.Nack(7, requeue=True)]
    assert drv.state(A) == "requeued"
    assert drv.core.inputs == {}
    drv.assert_files_deleted_once()


@pytest.mark.parametrize("failing", [0, 1])
@pytest.mark.parametrize("fail_first", [True, False])
def test_one_failed_file_of_two_waits_for_the_other(drv: Driver, failing: int,
                                                    fail_first: bool) -> None:
    started(drv)
    downloads = of(drv.deliver_fragment(7, A, ["1.jpg", "2.jpg"]), fx.DownloadFile)
    serial = downloads[0].input_id
    fail = ev.DownloadFailed(serial, failing, "missing-object", "gone", transient=False,
                             attempts=3)
    ok = ev.FileDownloaded(serial, 1 - failing, size=5)
    first, second = (fail, ok) if fail_first else (ok, fail)
    assert drv.feed(first) == []
    out = drv.feed(second)
    assert of(out, fx.DeleteFiles) == [
        fx.DeleteFiles((in_path(A, "1.jpg"), in_path(A, "2.jpg")), (in_dir(A),))]
    [dead] = of(out, fx.Publish)
    assert dict(dead.headers)["x-iterum-attempts"] == "3"
    drv.confirm(dead)
    assert of(drv.effects, fx.SendFrame) == []
    drv.assert_files_deleted_once()


def test_both_files_failing_give_one_dead_letter(drv: Driver) -> None:
    started(drv)
    downloads = of(drv.deliver_fragment(7, A, ["1.jpg", "2.jpg"]), fx.DownloadFile)
    for d in downloads:
        drv.feed(ev.DownloadFailed(d.input_id, d.index, "missing-object", "gone", False))
    [dead] = dead_letters(drv.effects)
    assert drv.confirm(dead) == [fx.Ack(7)]
    drv.assert_files_deleted_once()


def test_mixed_download_failures_settle_once(drv: Driver) -> None:
    """A transient and a permanent failure of one fragment: one outcome, one cleanup."""
    started(drv)
    downloads = of(drv.deliver_fragment(7, A, ["1.jpg", "2.jpg"]), fx.DownloadFile)
    drv.feed(ev.DownloadFailed(downloads[0].input_id, 0, "storage-unavailable", "503", True))
    out = drv.feed(ev.DownloadFailed(downloads[0].input_id, 1, "missing-object", "gone", False))
    outcomes = of(out, fx.Nack) + dead_letters(out)
    assert len(outcomes) == 1
    for p in dead_letters(out):
        drv.confirm(p)
    assert len(of(drv.effects, fx.Ack, fx.Nack)) == 1
    assert of(drv.effects, fx.SendFrame) == []
    drv.assert_files_deleted_once()


def test_completions_for_unknown_work_are_ignored(drv: Driver) -> None:
    started(drv)
    assert drv.feed(ev.FileDownloaded(99, 0, 1)) == []
    assert drv.feed(ev.DownloadFailed(99, 0, "x", "y", False)) == []
    assert drv.feed(ev.FileUploaded(99, 0, 1)) == []
    assert drv.feed(ev.UploadFailed(99, 0, "x", "y", False)) == []
    assert drv.feed(ev.PublishConfirmed(99)) == []
    assert drv.feed(ev.PublishRejected(99, "nack")) == []


# --- uploads ------------------------------------------------------------------------------


@pytest.mark.parametrize("done_first", [True, False])
def test_permanent_upload_failure_dead_letters_the_gated_input(drv: Driver,
                                                               done_first: bool) -> None:
    started(drv)
    body = remote_body(A)
    drv.deliver(7, body)
    drv.download(A)
    [upload] = drv.output([A], ["o.jpg"])
    if done_first:
        drv.done(A)
    out = drv.feed(ev.UploadFailed(upload.output_id, 0, "access-denied", "AccessDenied",
                                   transient=False, attempts=1))
    assert "output-access-denied" in log_codes(out)
    assert [t.dest for t in drv.transitions if t.machine == "output"][-1] == "failed"
    assert all(p.queue == DEAD_QUEUE for p in of(out, fx.Publish))  # no descriptor
    if not done_first:
        assert dead_letters(out) == []  # still waiting for done_with
        out = drv.done(A)
    [dead] = dead_letters(out)
    assert dead.body == body
    assert dict(dead.headers)["x-iterum-error-class"] == "access-denied"
    assert of(drv.effects, fx.Ack) == []
    assert drv.confirm(dead) == [fx.Ack(7)]
    assert upload.output_id not in drv.core.outputs
    assert not any(p.queue == OUT_QUEUE for p in of(drv.effects, fx.Publish))
    drv.assert_files_deleted_once()


@pytest.mark.parametrize("done_first", [True, False])
def test_transient_upload_failure_requeues_the_gated_input(drv: Driver,
                                                           done_first: bool) -> None:
    started(drv)
    drv.ready_input(7, A)
    [upload] = drv.output([A], ["o.jpg"])
    if done_first:
        drv.done(A)
    drv.feed(ev.UploadFailed(upload.output_id, 0, "storage-unavailable", "503",
                             transient=True, attempts=6))
    if not done_first:
        assert of(drv.effects, fx.Nack) == []
        drv.done(A)
    assert of(drv.effects, fx.Nack, fx.Ack) == [fx.Nack(7, requeue=True)]
    assert drv.state(A) == "requeued"
    drv.assert_files_deleted_once()


def test_failed_output_does_not_hold_back_other_inputs(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    [upload] = drv.output([A])
    ok = drv.output([B])
    drv.feed(ev.UploadFailed(upload.output_id, 0, "storage-unavailable", "503", True))
    drv.done(A)
    drv.done(B)
    drv.record(ok)
    assert of(drv.effects, fx.Nack, fx.Ack) == [fx.Nack(7, requeue=True), fx.Ack(8)]


def test_multi_file_output_fails_once_all_its_uploads_settled(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = of(drv.output([A], ["1.jpg", "2.jpg"]), fx.UploadFile)
    drv.done(A)
    out = drv.feed(ev.UploadFailed(uploads[0].output_id, 0, "access-denied", "x", False))
    assert out == []
    out = drv.feed(ev.FileUploaded(uploads[0].output_id, 1, 3))
    assert len(dead_letters(out)) == 1
    assert of(out, fx.DeleteFiles) == [fx.DeleteFiles(
        (f"{VOLUME}/output/1.jpg", f"{VOLUME}/output/2.jpg"))]
    drv.assert_files_deleted_once()


def test_failed_output_that_gates_nothing_is_reported_lost(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.done(A)  # acked: the output below arrives after done_with
    [upload] = drv.output([A], ["late.jpg"])
    out = drv.feed(ev.UploadFailed(upload.output_id, 0, "access-denied", "x", False))
    [lost] = [e for e in of(out, fx.Log) if e.code == "output-lost"]
    assert lost.level == "error"
    assert of(out, fx.DeleteFiles, fx.Publish, fx.Nack) == []
    drv.assert_files_deleted_once(left=[f"{VOLUME}/output/late.jpg"])


# --- refused publishes ------------------------------------------------------------------------


def test_refused_descriptor_publish_is_retried_then_gives_the_input_back(
        make_driver: Callable[..., Driver]) -> None:
    drv = started(make_driver(publish_attempts=3))
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    [pub] = of(drv.upload(uploads), fx.Publish)
    seen_ids = {pub.publish_id}
    for _ in range(2):
        out = drv.reject(pub, "returned: NO_ROUTE")
        assert "publish-refused" in log_codes(out)
        [again] = of(out, fx.Publish)
        assert (again.queue, again.body, again.message_id) == (pub.queue, pub.body,
                                                               pub.message_id)
        assert again.publish_id not in seen_ids
        seen_ids.add(again.publish_id)
        pub = again
    out = drv.reject(pub, "nack")
    assert of(out, fx.Publish) == []
    assert "output-publish-refused" in log_codes(out)
    assert [t.dest for t in drv.transitions if t.machine == "output"][-1] == "failed"
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert drv.core.outputs == {} and drv.core.publishes == {}
    drv.assert_files_deleted_once()


def test_refused_publish_that_then_succeeds(make_driver: Callable[..., Driver]) -> None:
    drv = started(make_driver(publish_attempts=2))
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    [pub] = of(drv.upload(uploads), fx.Publish)
    [again] = of(drv.reject(pub), fx.Publish)
    [lin] = of(drv.confirm(again), fx.Publish)
    [lin2] = of(drv.reject(lin), fx.Publish)
    assert lin2.body == lin.body
    assert drv.confirm(lin2) == [fx.Ack(7)]


def test_refused_lineage_publish_fails_the_output(make_driver: Callable[..., Driver]) -> None:
    drv = started(make_driver(publish_attempts=1))
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    [pub] = of(drv.upload(uploads), fx.Publish)
    [lin] = of(drv.confirm(pub), fx.Publish)
    out = drv.reject(lin)
    assert of(out, fx.Nack) == [fx.Nack(7, requeue=True)]
    assert of(drv.effects, fx.Ack) == []


def test_refused_dead_letter_requeues_instead(make_driver: Callable[..., Driver]) -> None:
    drv = started(make_driver(publish_attempts=2))
    drv.deliver(7, b"garbage")
    [dead] = of(drv.effects, fx.Publish)
    [again] = of(drv.reject(dead), fx.Publish)
    assert (again.queue, again.body, again.headers) == (dead.queue, dead.body, dead.headers)
    out = drv.reject(again)
    assert "dead-letter-refused" in log_codes(out)
    assert of(out, fx.Nack, fx.Ack) == [fx.Nack(7, requeue=True)]
    assert drv.core.inputs == {}


# --- duplicates --------------------------------------------------------------------------------


def test_duplicate_delivery_with_the_same_body_acks_the_copy(drv: Driver) -> None:
    started(drv)
    body = remote_body(A)
    drv.deliver(7, body)
    drv.download(A)
    out = drv.deliver(8, body, redelivered=True)
    assert without_logs(out) == [fx.Ack(8)]
    assert "duplicate-delivery" in log_codes(out)
    assert drv.state(A) == "dispatched"  # the original goes on
    assert of(drv.done(A), fx.Ack) == [fx.Ack(7)]
    assert len(of(drv.effects, fx.SendFrame)) == 1
    drv.assert_files_deleted_once()


def test_duplicate_delivery_with_a_different_body_is_dead_lettered(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    other = remote_body(A, ["different.jpg"])
    out = drv.deliver(8, other)
    [dead] = of(out, fx.Publish)
    assert (dead.queue, dead.body) == (DEAD_QUEUE, other)
    assert dict(dead.headers)["x-iterum-error-class"] == "conflicting-duplicate"
    assert of(out, fx.DownloadFile, fx.Ack) == []
    assert drv.confirm(dead) == [fx.Ack(8)]
    # the original is untouched and still known by its id
    assert drv.state(A) == "dispatched"
    assert of(drv.done(A), fx.Ack) == [fx.Ack(7)]
    drv.assert_files_deleted_once()


# --- odd frames from the transformation --------------------------------------------------------


def test_done_with_for_an_unknown_id_is_a_warning(drv: Driver) -> None:
    started(drv)
    out = drv.done(B)
    assert [(e.level, e.code) for e in out] == [("warning", "done-with-unknown")]


def test_second_done_with_is_a_warning(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    out = drv.done(A)  # still waiting for its output
    assert [(e.level, e.code) for e in out] == [("warning", "done-with-unexpected")]
    drv.record(uploads)
    out = drv.done(A)  # acked and forgotten
    assert [(e.level, e.code) for e in out] == [("warning", "done-with-unknown")]
    assert of(drv.effects, fx.Ack) == [fx.Ack(7)]


def test_done_with_before_dispatch_is_ignored(make_driver: Callable[..., Driver]) -> None:
    drv = make_driver()
    drv.start()
    drv.feed(ev.Connected(2, "fts"))  # no tts connection: nothing is dispatched
    drv.ready_input(7, A)
    out = drv.done(A)
    assert log_codes(out) == ["done-with-unexpected"]
    assert drv.state(A) == "downloaded"


def test_second_kill_is_a_warning(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = drv.output([A])  # keeps the sidecar from exiting after the first kill
    drv.done(A)
    drv.end_input()
    assert drv.kill() == []
    assert drv.core.step.state == "transformation_done"
    out = drv.kill()
    assert [(e.level, e.code) for e in out] == [("warning", "second-kill")]
    assert drv.core.step.state == "transformation_done"
    out = drv.record(uploads)
    assert of(out, fx.Ack) == [fx.Ack(7)]
    assert [e.code for e in of(out, fx.Exit)] == [0]


def test_second_early_kill_is_a_warning(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.done(A)
    uploads = drv.output([A])  # after done_with: gates nothing, but keeps the core alive
    assert "early-kill" in log_codes(drv.kill())
    out = drv.kill()
    assert [(e.level, e.code) for e in out] == [("warning", "second-kill")]
    assert [e.code for e in of(drv.record(uploads), fx.Exit)] == [3]


@pytest.mark.parametrize("payload", [
    b"not json", b"\xff\xfe", b"[]", b'{"status":""}', b'{"fragment_id":"short"}', b"{}",
    b'{"files":[{"name":"x","path":"/vol/x"}],"metadata":{"predecessors":"A"}}'])
def test_garbage_frames_are_logged_and_skipped(drv: Driver, payload: bytes) -> None:
    started(drv)
    drv.ready_input(7, A)
    out = drv.frame(payload)
    assert len(out) == 1 and isinstance(out[0], fx.Log)
    assert out[0].code.startswith("frame-")
    assert out[0].level == "error"
    # the connection stays: the next frame on it is handled
    assert of(drv.done(A), fx.Ack) == [fx.Ack(7)]
    assert of(drv.effects, fx.CloseConnection) == []


def test_rejected_framing_closes_that_connection(drv: Driver) -> None:
    started(drv)
    out = drv.feed(ev.FrameRejected(2, "frame of 4294967295 bytes exceeds the cap"))
    assert without_logs(out) == [fx.CloseConnection(2)]
    assert log_codes(out) == ["frame-rejected"]
    assert drv.core.exit_code is None


def test_frames_sent_to_the_transformation_use_the_tts_connection(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    assert [f.conn for f in of(drv.effects, fx.SendFrame)] == [TTS]
    assert json.loads(of(drv.effects, fx.SendFrame)[0].payload)["metadata"]["fragment_id"] == A
