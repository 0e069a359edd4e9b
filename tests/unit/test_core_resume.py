"""A restart on the same volume (docs/reliability.md, case 7): what a killed sidecar's
journal tells the next one (sidecar/shell/recovery.py), and what the core does with it (ev.Resume).

An input whose done_with had come and whose outputs were all uploaded is not processed
again when the broker delivers it again: its descriptors and lineage not yet confirmed are
published again (the same bytes, the same message ids) and it is acked. Everything else is
processed again, with the same output ids. Leftover files are deleted once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from unit_driver import (
    IN_BUCKET,
    LINEAGE_QUEUE,
    OUT_BUCKET,
    OUT_QUEUE,
    STEP,
    VOLUME,
    Driver,
    fid,
    log_codes,
    make_config,
    of,
    remote_body,
)

from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.core.protocol import RemoteFile, encode_lineage, encode_remote, output_id
from sidecar.shell.journal import Recorder, list_segments, load
from sidecar.shell.recovery import recover
from sidecar.tools.replay import Replayer

A, B, C, D = fid("a"), fid("b"), fid("c"), fid("d")


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def descriptor(preds: list[str], index: int = 0, name: str = "o.jpg") -> tuple[str, bytes]:
    oid = output_id(STEP, preds, index)
    body = encode_remote(oid, [RemoteFile(name, f"iterum_data/{oid}/{name}", OUT_BUCKET)],
                         preds, None, None)
    return oid, body


def resumed_driver(inputs, outputs, **more) -> Driver:
    drv = Driver()
    drv.feed(ev.Resume(run=1, inputs=tuple(inputs), outputs=tuple(outputs), **more))
    drv.start()
    drv.connect()
    return drv


# --- the core ------------------------------------------------------------------------------


def test_a_finished_input_is_republished_and_acked_without_the_transformation() -> None:
    body = remote_body(A)
    oid, desc = descriptor([A])
    drv = resumed_driver([(A, digest(body), (oid,))],
                         [(oid, "uploaded", OUT_QUEUE, desc.decode())])
    out = drv.deliver(7, body, redelivered=True)
    assert of(out, fx.DownloadFile, fx.SendFrame, fx.Ack) == []
    assert "resumed" in log_codes(out)
    [again] = of(out, fx.Publish)
    assert (again.queue, again.body, again.message_id) == (OUT_QUEUE, desc, oid)
    [lineage] = of(drv.confirm(again), fx.Publish)
    assert (lineage.queue, lineage.body) == (LINEAGE_QUEUE, encode_lineage(STEP, desc))
    assert of(drv.confirm(lineage), fx.Ack) == [fx.Ack(7)]
    assert drv.history(A) == ["received", "processed", "uploaded", "published", "acked"]
    assert drv.core.resume_inputs == {} and drv.core.resume_outputs == {}


def test_an_output_whose_descriptor_was_confirmed_only_needs_its_lineage() -> None:
    body = remote_body(A)
    oid, desc = descriptor([A])
    drv = resumed_driver([(A, digest(body), (oid,))],
                         [(oid, "published", OUT_QUEUE, desc.decode())])
    [lineage] = of(drv.deliver(7, body), fx.Publish)
    assert lineage.queue == LINEAGE_QUEUE and lineage.message_id == oid
    assert of(drv.confirm(lineage), fx.Ack) == [fx.Ack(7)]


def test_an_input_with_no_output_left_is_acked_at_once() -> None:
    body = remote_body(A)
    drv = resumed_driver([(A, digest(body), ())], [])
    assert of(drv.deliver(7, body), fx.Ack, fx.Publish, fx.DownloadFile) == [fx.Ack(7)]


def test_an_output_of_two_resumed_inputs_is_published_once_and_holds_both() -> None:
    ba, bb = remote_body(A), remote_body(B)
    oid, desc = descriptor([A, B])
    drv = resumed_driver([(A, digest(ba), (oid,)), (B, digest(bb), (oid,))],
                         [(oid, "uploaded", OUT_QUEUE, desc.decode())])
    [again] = of(drv.deliver(7, ba), fx.Publish)
    assert of(drv.deliver(8, bb), fx.Publish) == []  # the same output, in flight
    [lineage] = of(drv.confirm(again), fx.Publish)
    assert sorted(of(drv.confirm(lineage), fx.Ack), key=lambda a: a.tag) == [fx.Ack(7),
                                                                            fx.Ack(8)]


def test_a_shared_output_recorded_here_already_is_not_published_again() -> None:
    ba, bb = remote_body(A), remote_body(B)
    oid, desc = descriptor([A, B])
    drv = resumed_driver([(A, digest(ba), (oid,)), (B, digest(bb), (oid,))],
                         [(oid, "uploaded", OUT_QUEUE, desc.decode())])
    drv.record([])
    [again] = of(drv.deliver(7, ba), fx.Publish)
    for lineage in of(drv.confirm(again), fx.Publish):
        drv.confirm(lineage)
    assert of(drv.deliver(8, bb), fx.Publish, fx.Ack) == [fx.Ack(8)]


def test_another_body_under_the_same_id_is_processed_again() -> None:
    oid, desc = descriptor([A])
    drv = resumed_driver([(A, digest(remote_body(A)), (oid,))],
                         [(oid, "uploaded", OUT_QUEUE, desc.decode())])
    out = drv.deliver(7, remote_body(A, ["other.jpg"]))
    assert "resume-mismatch" in log_codes(out)
    assert len(of(out, fx.DownloadFile)) == 1 and of(out, fx.Publish) == []
    assert drv.core.resume_outputs == {}  # nothing names it any more


def test_a_leftover_of_another_shape_is_deleted_when_its_input_comes_back() -> None:
    old = f"{VOLUME}/{IN_BUCKET}/{B}/renamed.jpg"
    drv = Driver()
    drv.feed(ev.Resume(run=3, later=((B, (old,), (f"{VOLUME}/{IN_BUCKET}/{B}",)),)))
    drv.start()
    out = drv.deliver_fragment(7, B)
    assert of(out, fx.DeleteFiles) == [fx.DeleteFiles((old,))]


def test_inputs_not_known_are_processed_as_usual() -> None:
    oid, desc = descriptor([A])
    drv = resumed_driver([(A, digest(remote_body(A)), (oid,))],
                         [(oid, "uploaded", OUT_QUEUE, desc.decode())])
    assert len(of(drv.deliver_fragment(7, B), fx.DownloadFile)) == 1
    assert A in drv.core.resume_inputs


def test_leftovers_are_deleted_now_or_when_the_input_ends_or_by_the_redelivery() -> None:
    files_b = (f"{VOLUME}/{IN_BUCKET}/{B}/x.jpg", f"{VOLUME}/{IN_BUCKET}/{B}/x.jpg.part")
    files_c = (f"{VOLUME}/{IN_BUCKET}/{C}/x.jpg", f"{VOLUME}/{IN_BUCKET}/{C}/x.jpg.part")
    drv = Driver()
    out = drv.feed(ev.Resume(run=3, delete=(f"{VOLUME}/output/old.jpg",), later=(
        (B, files_b, (f"{VOLUME}/{IN_BUCKET}/{B}",)),
        (C, files_c, (f"{VOLUME}/{IN_BUCKET}/{C}",)))))
    assert of(out, fx.DeleteFiles) == [fx.DeleteFiles((f"{VOLUME}/output/old.jpg",))]
    assert "resuming" in log_codes(out)
    drv.start()
    drv.connect()
    out = drv.ready_input(7, B)  # delivered again: the same paths, deleted at done_with
    assert of(out, fx.DeleteFiles) == [] and B not in drv.core.leftovers
    drv.done(B)
    out = drv.end_input()  # C never came back: its files go now
    assert fx.DeleteFiles(files_c, (f"{VOLUME}/{IN_BUCKET}/{C}",)) in of(out, fx.DeleteFiles)
    out = drv.kill()
    assert [e.code for e in of(out, fx.Exit)] == [0]
    assert fx.DeleteFiles((), (f"{VOLUME}/{IN_BUCKET}",)) in of(out, fx.DeleteFiles)
    deleted = [p for d in of(drv.effects, fx.DeleteFiles) for p in d.paths]
    assert sorted(deleted) == sorted([f"{VOLUME}/output/old.jpg", files_b[0], *files_c])


def test_knowledge_after_the_start_is_ignored() -> None:
    drv = Driver()
    drv.start()
    drv.deliver_fragment(7, A)
    out = drv.feed(ev.Resume(run=1, inputs=((B, "x", ()),)))
    assert log_codes(out) == ["resume-late"] and drv.core.resume_inputs == {}


# --- the journal of a killed sidecar --------------------------------------------------------


def killed_run(directory: Path) -> Driver:
    """A run killed mid-way, recorded: A finished and uploaded (its descriptor sent, not
    confirmed), B being processed by the transformation, C done_with with its output still
    uploading, D acked."""
    drv = Driver()
    rec = Recorder(str(directory), drv.core, max_bytes=1 << 30, keep=10)
    drv.observers.append(rec)
    drv.start()
    drv.connect()
    for tag, f in enumerate((A, B, C, D), start=1):
        drv.ready_input(tag, f)
    drv.upload(drv.output([A], ["a.out"]))
    drv.done(A)
    drv.output([C], ["c.out"])
    drv.done(C)
    drv.record(drv.output([D], ["d.out"]))
    drv.done(D)
    assert (drv.state(A), drv.state(B), drv.state(C), drv.state(D)) == (
        "uploaded", "dispatched", "processed", "acked")
    rec.close()  # SIGKILL: no exit, the journal ends here
    return drv


def test_the_journal_of_a_killed_run_gives_what_can_be_resumed(tmp_path: Path) -> None:
    dead = killed_run(tmp_path)
    event = recover(str(tmp_path), make_config())
    assert event is not None and event.run == 1
    [(fid_a, body_digest, outs)] = event.inputs
    oid = output_id(STEP, [A], 0)
    assert (fid_a, body_digest, outs) == (A, digest(dead.inputs[A].body), (oid,))
    [(out_id, stage, queue, desc)] = event.outputs
    assert (out_id, stage, queue) == (oid, "uploaded", OUT_QUEUE)
    assert json.loads(desc)["metadata"]["fragment_id"] == oid
    # C's output never reached S3: its file goes, C is processed again when delivered
    assert f"{VOLUME}/output/c.out" in event.delete
    # B's download may still be read by a transformation that outlived the sidecar
    [(later_fid, files, _)] = event.later
    assert later_fid == B and f"{VOLUME}/{IN_BUCKET}/{B}/x.jpg" in files


def test_the_next_run_resumes_a_and_processes_b_and_c_with_the_same_ids(tmp_path: Path) -> None:
    dead = killed_run(tmp_path)
    event = recover(str(tmp_path), make_config())
    drv = Driver()
    rec = Recorder(str(tmp_path), drv.core, max_bytes=1 << 30, keep=10)
    drv.observers.append(rec)
    drv.feed(event)
    drv.start()
    drv.connect()
    bodies = {f: dead.inputs[f].body for f in (A, B, C)}
    [again] = of(drv.deliver(11, bodies[A], redelivered=True), fx.Publish)
    first = next(p for p in of(dead.effects, fx.Publish) if p.queue == OUT_QUEUE)
    assert (again.body, again.message_id) == (first.body, first.message_id)
    for lineage in of(drv.confirm(again), fx.Publish):
        drv.confirm(lineage)
    for tag, f in ((12, B), (13, C)):
        drv.deliver(tag, bodies[f], redelivered=True)
        drv.download(f)
        uploads = drv.output([f], [f"{f[0]}.out"])
        assert of(uploads, fx.UploadFile)[0].key.startswith(
            f"iterum_data/{output_id(STEP, [f], 0)}/")  # the same id as before the kill
        drv.done(f)
        drv.record(uploads)
    drv.end_input()
    drv.kill()
    rec.close()
    assert sorted(a.tag for a in of(drv.effects, fx.Ack)) == [11, 12, 13]
    assert [e.code for e in of(drv.effects, fx.Exit)] == [0]
    # the new run's journal starts with the knowledge and replays
    journal = load(str(tmp_path))
    assert type(journal.segments[0].records[0].event) is ev.Resume
    replayer = Replayer(journal)
    assert replayer.run(), replayer.divergence and replayer.divergence.describe()


def test_knowledge_not_used_is_handed_on_to_the_run_after(tmp_path: Path) -> None:
    killed_run(tmp_path)
    event = recover(str(tmp_path), make_config())
    drv = Driver()  # run 2: killed before A came back
    rec = Recorder(str(tmp_path), drv.core, max_bytes=1 << 30, keep=10)
    drv.observers.append(rec)
    drv.feed(event)
    drv.start()
    rec.close()
    again = recover(str(tmp_path), make_config())
    assert again is not None and again.run == 2
    assert again.inputs == event.inputs and again.outputs == event.outputs
    assert again.later == event.later


def test_a_run_killed_before_it_recorded_anything_hands_on_its_predecessors(
        tmp_path: Path) -> None:
    killed_run(tmp_path)
    Recorder(str(tmp_path), Driver().core, max_bytes=1 << 30, keep=10).close()  # run 2
    event = recover(str(tmp_path), make_config())
    assert event is not None and event.run == 1 and len(event.inputs) == 1


def test_a_line_cut_short_by_the_kill_is_dropped(tmp_path: Path) -> None:
    killed_run(tmp_path)
    [(_, _, path)] = list_segments(str(tmp_path))
    with open(path, "a") as f:
        f.write('{"seq": 99, "t": 1.0, "event": {"kind": "Deliv')
    event = recover(str(tmp_path), make_config())
    assert event is not None and len(event.inputs) == 1


@pytest.mark.parametrize("change", [dict(step="h-other"), dict(output_bucket="other-bucket"),
                                    dict(dead_letter_queue="other-in-dead")])
def test_a_journal_of_another_step_or_queue_is_not_used(tmp_path: Path, caplog,
                                                        change: dict) -> None:
    killed_run(tmp_path)
    with caplog.at_level(logging.WARNING, "sidecar.resume"):
        assert recover(str(tmp_path), make_config(**change)) is None
    assert "of another step or queue" in caplog.text


@pytest.mark.parametrize("content", ["", "not json\n", '{"header": {"format": 99}}\n{}\n'])
def test_an_unreadable_journal_means_starting_fresh(tmp_path: Path, caplog,
                                                    content: str) -> None:
    (tmp_path / "run0001-seg0001.jsonl").write_text(content)
    with caplog.at_level(logging.WARNING, "sidecar.resume"):
        assert recover(str(tmp_path), make_config()) is None
    assert "starting fresh" in caplog.text


def test_a_run_that_ended_normally_leaves_nothing_to_resume(tmp_path: Path) -> None:
    drv = Driver()
    rec = Recorder(str(tmp_path), drv.core, max_bytes=1 << 30, keep=10)
    drv.observers.append(rec)
    drv.start()
    drv.connect()
    drv.end_input()
    drv.kill()
    rec.close()
    assert recover(str(tmp_path), make_config()) is None
    assert recover(str(tmp_path / "nothing-here"), make_config()) is None


def test_the_knowledge_survives_a_rotated_journal(tmp_path: Path) -> None:
    """Only the newest segment is read: its checkpoint holds everything before it."""
    drv = Driver()
    rec = Recorder(str(tmp_path), drv.core, max_bytes=600, keep=50)
    drv.observers.append(rec)
    drv.start()
    drv.connect()
    for tag, f in enumerate((B, C, D), start=1):
        drv.ready_input(tag, f)
        drv.record(drv.output([f]))
        drv.done(f)
    drv.ready_input(4, A)
    drv.upload(drv.output([A]))
    drv.done(A)
    rec.close()
    assert len(list_segments(str(tmp_path))) > 2
    event = recover(str(tmp_path), make_config())
    assert [i[0] for i in event.inputs] == [A]


# --- determinism ---------------------------------------------------------------------------


def restart_and_loss_run() -> Driver:
    """A restarted run touching the new rules: resume knowledge (used, mismatched, unused,
    leftovers), a broker loss with unconfirmed publishes, an adopted redelivery, an input
    whose delivery never comes back, and a loss after the input ended (adopt-only)."""
    ba = remote_body(A)
    oid, desc = descriptor([A])
    drv = Driver()
    drv.feed(ev.Resume(run=2, inputs=((A, digest(ba), (oid,)), (D, "other", ())),
                       outputs=((oid, "uploaded", OUT_QUEUE, desc.decode()),),
                       delete=(f"{VOLUME}/output/x",),
                       later=((C, (f"{VOLUME}/{IN_BUCKET}/{C}/x.jpg",), ()),)))
    drv.start()
    drv.connect()
    [again] = of(drv.deliver(1, ba), fx.Publish)
    drv.ready_input(2, B)
    drv.deliver_fragment(3, D)  # known with another body: processed again
    drv.download(D)
    [upload] = drv.output([B])
    drv.feed(ev.BrokerLost("reset"))
    drv.done(B)
    drv.upload([upload])
    out = drv.feed(ev.BrokerReady())
    for p in of(out, fx.Publish):
        for lineage in of(drv.confirm(p), fx.Publish):
            drv.confirm(lineage)
    drv.feed(ev.Delivered(1, ba, redelivered=True))  # A again: adopted, acked
    drv.feed(ev.Delivered(2, remote_body(B), redelivered=True))  # B again: adopted, acked
    drv.feed(ev.UpstreamFinished())
    drv.feed(ev.QueueInspected(0))
    drv.feed(ev.BrokerLost("reset again"))  # the cancel is lost: the input has ended
    drv.feed(ev.BrokerReady())  # D's delivery is back in the queue: adopt-only
    drv.feed(ev.QueueInspected(0))  # it went elsewhere
    drv.feed(ev.ConsumerStopped())
    drv.record(drv.output([D]))
    drv.done(D)  # released
    drv.kill()
    del again
    return drv


def test_the_restart_and_loss_run_ends_cleanly_and_replays() -> None:
    from test_core_replay import replay

    drv = restart_and_loss_run()
    assert [e.code for e in of(drv.effects, fx.Exit)] == [0]
    assert sorted(a.tag for a in of(drv.effects, fx.Ack)) == [1, 2]
    assert drv.state(D) == "requeued" and drv.core.inputs == {}
    assert replay(drv.journal) == [(out, ts) for _, _, out, ts in drv.journal]
