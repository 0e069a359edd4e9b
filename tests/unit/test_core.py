"""Core: the life of fragments through the pure core, effect by effect.

Covers the 1→1 happy path, ack gating (§16.8) in every order, 1→N, N→1, 1→0, outputs
after done_with, queue_mapping, outputs without predecessors (§16.14) and the
deterministic output ids (§16.15).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from unit_driver import (
    DEAD_QUEUE,
    IN_BUCKET,
    LINEAGE_QUEUE,
    OUT_BUCKET,
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
from sidecar.core.protocol import output_id

A, B, C = fid("a"), fid("b"), fid("c")
FULL_CHAIN = ["received", "downloaded", "dispatched", "processed", "uploaded", "published",
              "acked"]


def in_path(fragment_id: str, name: str = "x.jpg", bucket: str = IN_BUCKET) -> str:
    """§16.7: inputs live in a directory per fragment: /vol/<bucket>/<fragment_id>/<name>."""
    return f"{VOLUME}/{bucket}/{fragment_id}/{name}"


def out_path(name: str) -> str:
    return f"{VOLUME}/output/{name}"


def descriptor(oid: str, names: list[str], preds: list[str], **meta: object) -> bytes:
    """The RemoteFragmentDesc the sidecar must publish, written out in Go field order."""
    compact = {"separators": (",", ":")}
    files = ",".join(
        '{"name":"' + n + '","path":"iterum_data/' + oid + "/" + n + '","bucket":"'
        + OUT_BUCKET + '"}' for n in names)
    body = ('{"files":[' + files + '],"metadata":{"fragment_id":"' + oid
            + '","predecessors":' + json.dumps(preds, **compact))
    for k, v in meta.items():
        body += ',"' + k + '":' + json.dumps(v, **compact)
    return (body + "}}").encode()


def lineage(desc: bytes) -> bytes:
    return b'{"transformation_step":"' + STEP.encode() + b'","description":' + desc + b"}"


def started(drv: Driver, connect: bool = True) -> Driver:
    assert drv.start() == [fx.StartConsuming(4)]
    if connect:
        assert drv.connect() == []
    return drv


# --- the 1 → 1 happy path, effect by effect ------------------------------------------------


def test_happy_path_one_to_one(drv: Driver) -> None:
    assert drv.core.step.state == "starting"
    started(drv)
    assert drv.core.step.state == "consuming"

    body = remote_body(A, ["x.jpg"])
    out = drv.deliver(7, body)
    serial = drv.inputs[A].serial
    assert out == [fx.DownloadFile(serial, 0, IN_BUCKET, "iterum_data/x.jpg", in_path(A))]
    assert drv.state(A) == "received"

    out = drv.feed(ev.FileDownloaded(serial, 0, size=123))
    assert len(out) == 1 and isinstance(out[0], fx.SendFrame) and out[0].conn == TTS
    assert json.loads(out[0].payload) == {
        "files": [{"name": "x.jpg", "path": in_path(A)}],
        "metadata": {"fragment_id": A, "predecessors": []}}
    assert drv.state(A) == "dispatched"

    out = drv.output([A], ["edges_x.jpg"])
    oid = output_id(STEP, [A], 0)
    [upload] = out
    assert upload == fx.UploadFile(upload.output_id, 0, OUT_BUCKET,
                                   f"iterum_data/{oid}/edges_x.jpg", out_path("edges_x.jpg"))
    assert drv.core.outputs[upload.output_id].state == "received"
    # the fragments the transfers are for, as the shell logs them (retries)
    assert (drv.core.fragment_of(serial), drv.core.fragment_of(upload.output_id)) == (A, oid)
    assert drv.core.fragment_of(10_000) == ""

    out = drv.feed(ev.FileUploaded(upload.output_id, 0, size=9))
    [delete] = of(out, fx.DeleteFiles)
    assert delete == fx.DeleteFiles((out_path("edges_x.jpg"),))
    [pub] = of(out, fx.Publish)
    assert (pub.queue, pub.body, pub.message_id) == (
        OUT_QUEUE, descriptor(oid, ["edges_x.jpg"], [A]), oid)
    assert len(out) == 2
    assert drv.core.outputs[upload.output_id].state == "uploaded"

    out = drv.done(A)  # the demo's order: produce, then done_with
    assert out == [fx.DeleteFiles((in_path(A),), (f"{VOLUME}/{IN_BUCKET}/{A}",))]
    assert drv.state(A) == "uploaded"  # done, its one output in S3, not yet confirmed

    out = drv.confirm(pub)
    [lin] = out
    assert isinstance(lin, fx.Publish)
    assert (lin.queue, lin.body) == (LINEAGE_QUEUE, lineage(pub.body))
    assert lin.publish_id != pub.publish_id
    assert drv.core.outputs[upload.output_id].state == "published"
    assert drv.state(A) == "uploaded"

    out = drv.confirm(lin)
    assert out == [fx.Ack(7)]
    assert drv.history(A) == FULL_CHAIN
    assert drv.core.inputs == {} and drv.core.outputs == {} and drv.core.publishes == {}
    drv.assert_files_deleted_once()


def test_transitions_are_reported(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    got = [(t.machine, t.fragment, t.trigger, t.source, t.dest) for t in drv.transitions]
    assert got == [
        ("step", "", "broker_ready", "starting", "consuming"),
        ("input", A, "new", "", "received"),
        ("input", A, "download_done", "received", "downloaded"),
        ("input", A, "dispatch", "downloaded", "dispatched"),
    ]


# --- ack gating (§16.8) in every order ------------------------------------------------------


def _output_steps(drv: Driver) -> list[tuple[str, Callable[[], list[fx.Effect]]]]:
    def publishes() -> list[fx.Publish]:
        return of(drv.effects, fx.Publish)

    return [
        ("output", lambda: drv.output([A])),
        ("upload", lambda: drv.upload(drv.effects)),
        ("descriptor-confirm", lambda: drv.confirm(publishes()[0])),
        ("lineage-confirm", lambda: drv.confirm(publishes()[1])),
    ]


@pytest.mark.parametrize("done_after", [1, 2, 3, 4],
                         ids=["after-output", "after-upload", "after-descriptor",
                              "after-lineage"])
def test_ack_needs_done_with_and_the_lineage_confirm(drv: Driver, done_after: int) -> None:
    started(drv)
    drv.ready_input(7, A)
    steps = _output_steps(drv)
    steps.insert(done_after, ("done_with", lambda: drv.done(A)))
    acks_per_step = {name: of(run(), fx.Ack) for name, run in steps}
    last = steps[-1][0]
    assert acks_per_step.pop(last) == [fx.Ack(7)]
    assert all(acks == [] for acks in acks_per_step.values()), acks_per_step
    assert drv.history(A) == FULL_CHAIN
    drv.assert_files_deleted_once()


def test_input_states_while_waiting_for_outputs(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    assert drv.state(A) == "processed"  # the output is not in S3 yet
    pubs = of(drv.upload(uploads), fx.Publish)
    assert drv.state(A) == "uploaded"
    lin = of(drv.confirm(pubs[0]), fx.Publish)
    assert drv.state(A) == "uploaded"
    assert drv.confirm(lin[0]) == [fx.Ack(7)]
    assert drv.state(A) == "acked"


def test_one_to_zero_acks_right_after_done_with(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    out = drv.done(A)
    assert without_logs(out) == [
        fx.DeleteFiles((in_path(A),), (f"{VOLUME}/{IN_BUCKET}/{A}",)), fx.Ack(7)]
    assert drv.history(A) == FULL_CHAIN


def test_output_after_done_with_does_not_gate(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    assert of(drv.done(A), fx.Ack) == [fx.Ack(7)]
    uploads = drv.output([A])
    [pub] = of(drv.upload(uploads), fx.Publish)
    assert json.loads(pub.body)["metadata"]["predecessors"] == [A]
    [lin] = of(drv.confirm(pub), fx.Publish)
    assert drv.confirm(lin) == []  # no second ack: nothing was waiting for this output
    assert of(drv.effects, fx.Ack) == [fx.Ack(7)]
    drv.assert_files_deleted_once()


def test_late_output_does_not_delay_an_ack_held_by_an_early_one(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    early = drv.output([A], ["early.jpg"])
    drv.done(A)
    late = drv.output([A], ["late.jpg"])
    assert of(drv.record(early), fx.Ack) == [fx.Ack(7)]
    assert drv.state(A) == "acked"
    assert of(drv.record(late), fx.Ack) == []
    drv.assert_files_deleted_once()


def test_one_to_many(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    first = drv.output([A], ["1.jpg"])
    second = drv.output([A], ["2.jpg", "3.jpg"])
    assert len(of(second, fx.UploadFile)) == 2
    drv.done(A)
    assert of(drv.record(first), fx.Ack) == []
    assert drv.state(A) == "processed"  # the second output is not in S3 yet
    assert of(drv.record(second), fx.Ack) == [fx.Ack(7)]
    bodies = [json.loads(pb.body) for pb in of(drv.effects, fx.Publish) if pb.queue == OUT_QUEUE]
    ids = [b["metadata"]["fragment_id"] for b in bodies]
    assert ids == [output_id(STEP, [A], 0), output_id(STEP, [A], 1)]
    assert [f["name"] for f in bodies[1]["files"]] == ["2.jpg", "3.jpg"]
    drv.assert_files_deleted_once()


def test_multi_file_output_publishes_once_all_files_are_up(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = of(drv.output([A], ["1.jpg", "2.jpg"]), fx.UploadFile)
    assert [u.index for u in uploads] == [0, 1]
    assert drv.feed(ev.FileUploaded(uploads[1].output_id, 1, 5)) == []
    out = drv.feed(ev.FileUploaded(uploads[0].output_id, 0, 5))
    assert of(out, fx.DeleteFiles) == [fx.DeleteFiles((out_path("1.jpg"), out_path("2.jpg")))]
    assert len(of(out, fx.Publish)) == 1


def test_many_to_one_gates_every_named_input(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    drv.ready_input(9, C)
    merged = drv.output([B, A], ["merged.jpg"])
    assert of(drv.done(A), fx.Ack) == []
    assert of(drv.done(B), fx.Ack) == []
    assert of(drv.done(C), fx.Ack) == [fx.Ack(9)]  # not named by the output
    acks = of(drv.record(merged), fx.Ack)
    assert sorted(a.tag for a in acks) == [7, 8]
    [pub] = [pb for pb in of(drv.effects, fx.Publish) if pb.queue == OUT_QUEUE]
    oid = output_id(STEP, [A, B], 0)
    assert pub.message_id == oid
    assert pub.body == descriptor(oid, ["merged.jpg"], [B, A])  # as given by the user
    drv.assert_files_deleted_once()


def test_many_to_one_acks_each_input_once_its_own_done_with_came(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    merged = drv.output([A, B])
    drv.done(A)
    assert of(drv.record(merged), fx.Ack) == [fx.Ack(7)]
    assert drv.state(B) == "dispatched"
    assert of(drv.done(B), fx.Ack) == [fx.Ack(8)]


def test_files_are_listed_in_message_order_and_dispatched_after_the_last(drv: Driver) -> None:
    started(drv)
    downloads = of(drv.deliver_fragment(7, A, ["1.jpg", "sub/2.jpg"]), fx.DownloadFile)
    assert [d.dest for d in downloads] == [in_path(A, "1.jpg"), in_path(A, "sub/2.jpg")]
    assert drv.feed(ev.FileDownloaded(downloads[1].input_id, 1, 1)) == []
    [frame] = drv.feed(ev.FileDownloaded(downloads[0].input_id, 0, 1))
    assert [f["path"] for f in json.loads(frame.payload)["files"]] == [
        in_path(A, "1.jpg"), in_path(A, "sub/2.jpg")]
    [delete] = of(drv.done(A), fx.DeleteFiles)
    assert delete.paths == (in_path(A, "1.jpg"), in_path(A, "sub/2.jpg"))
    assert delete.dirs == (f"{VOLUME}/{IN_BUCKET}/{A}/sub", f"{VOLUME}/{IN_BUCKET}/{A}")


def test_custom_and_null_predecessors_reach_the_transformation(drv: Driver) -> None:
    started(drv)
    drv.deliver_fragment(7, A, predecessors=None, custom={"label": "cat"})
    [frame] = drv.download(A)
    assert json.loads(frame.payload)["metadata"] == {
        "fragment_id": A, "predecessors": None, "custom": {"label": "cat"}}


def test_empty_fragment_is_dispatched_without_downloads(drv: Driver) -> None:
    started(drv)
    out = drv.deliver_fragment(7, A, [])
    [frame] = out
    assert json.loads(frame.payload)["files"] == []
    assert drv.state(A) == "dispatched"


def test_fragments_wait_for_a_tts_connection(drv: Driver) -> None:
    started(drv, connect=False)
    assert of(drv.ready_input(7, A), fx.SendFrame) == []
    assert drv.state(A) == "downloaded"
    out = drv.feed(ev.Connected(5, "tts"))
    assert [f.conn for f in of(out, fx.SendFrame)] == [5]
    assert drv.state(A) == "dispatched"


def test_several_tts_connections_share_the_fragments(drv: Driver) -> None:
    started(drv, connect=False)
    drv.feed(ev.Connected(5, "tts"))
    drv.feed(ev.Connected(6, "tts"))
    for tag, f in enumerate((A, B, C, fid("d")), start=1):
        drv.ready_input(tag, f)
    assert sorted(f.conn for f in of(drv.effects, fx.SendFrame)) == [5, 5, 6, 6]


def test_deliveries_before_broker_ready_are_returned(drv: Driver) -> None:
    out = drv.deliver_fragment(7, A)
    assert without_logs(out) == [fx.Nack(7, requeue=True)]
    assert drv.core.inputs == {}


def test_redelivered_flag_is_logged(drv: Driver) -> None:
    started(drv)
    out = drv.deliver(7, remote_body(A), redelivered=True)
    assert "redelivered" in log_codes(out)
    assert len(of(out, fx.DownloadFile)) == 1


# --- output routing ------------------------------------------------------------------------


def test_mapped_output_channel_goes_to_the_mapped_queue(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = drv.output([A], ["r.jpg"], output_channel="rejects", custom={"why": "blurry"})
    [pub] = of(drv.upload(uploads), fx.Publish)
    oid = output_id(STEP, [A], 0)
    assert pub.queue == "h-rejects"
    assert pub.body == descriptor(oid, ["r.jpg"], [A], target_queue="h-rejects",
                                  custom={"why": "blurry"})
    drv.done(A)
    lin = of(drv.confirm(pub), fx.Publish)
    assert lin[0].queue == LINEAGE_QUEUE
    assert drv.confirm(lin[0]) == [fx.Ack(7)]


def test_unmapped_output_channel_dead_letters_the_input(drv: Driver) -> None:
    started(drv)
    body = remote_body(A)
    drv.deliver(7, body)
    drv.download(A)
    out = drv.output([A], ["n.jpg"], output_channel="nowhere")
    assert of(out, fx.UploadFile, fx.Publish) == []
    assert "output-invalid-output" in log_codes(out)
    assert of(out, fx.DeleteFiles) == [fx.DeleteFiles((out_path("n.jpg"),))]
    out = drv.done(A)
    [dead] = of(out, fx.Publish)
    assert (dead.queue, dead.body) == (DEAD_QUEUE, body)
    headers = dict(dead.headers)
    assert headers["x-iterum-error-class"] == "invalid-output"
    assert "nowhere" in headers["x-iterum-error"]
    assert headers["x-iterum-step"] == STEP
    assert of(out, fx.Ack, fx.Nack) == []
    assert drv.state(A) == "dead_lettering"
    assert drv.confirm(dead) == [fx.Ack(7)]
    assert drv.state(A) == "dead_lettered"
    assert drv.core.inputs == {}
    drv.assert_files_deleted_once(also=[out_path("n.jpg")])


def test_output_without_predecessors_is_published_with_an_empty_array(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    out = drv.output([], ["orphan.jpg"])
    [warning] = [e for e in of(out, fx.Log) if e.code == "output-without-predecessors"]
    assert warning.level == "warning"
    oid = output_id(STEP, [], 0)
    [pub] = of(drv.upload(out), fx.Publish)
    assert pub.body == descriptor(oid, ["orphan.jpg"], [])
    assert drv.core.counts["output-without-predecessors"] == 1
    # it gates nothing: the input acks on its own
    assert of(drv.done(A), fx.Ack) == [fx.Ack(7)]
    drv.confirm(pub)
    drv.assert_files_deleted_once()


def test_output_outside_the_volume_is_refused_and_dead_letters_its_input(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    out = drv.frame(json.dumps({"files": [{"name": "x", "path": "/etc/passwd"}],
                                "metadata": {"predecessors": [A]}}).encode())
    assert of(out, fx.UploadFile, fx.DeleteFiles) == []  # never touch a file outside
    assert any(c.startswith("output-") for c in log_codes(out))
    [dead] = of(drv.done(A), fx.Publish)
    assert dead.queue == DEAD_QUEUE
    assert dict(dead.headers)["x-iterum-error-class"] == "invalid-output"
    assert drv.confirm(dead) == [fx.Ack(7)]


@pytest.mark.parametrize("path", ["/vol/../etc/x", "relative/x", "/vol", "/volume/x"])
def test_output_paths_that_escape_are_refused(drv: Driver, path: str) -> None:
    started(drv)
    drv.ready_input(7, A)
    out = drv.frame(json.dumps({"files": [{"name": "x", "path": path}],
                                "metadata": {"predecessors": [A]}}).encode())
    assert of(out, fx.UploadFile, fx.DeleteFiles) == []
    assert of(drv.done(A), fx.Publish)[0].queue == DEAD_QUEUE


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../b", ""])
def test_output_with_an_unsafe_name_dead_letters_its_input(drv: Driver, name: str) -> None:
    started(drv)
    drv.ready_input(7, A)
    out = drv.frame(json.dumps({"files": [{"name": name, "path": "/vol/out/x"}],
                                "metadata": {"predecessors": [A]}}).encode())
    assert of(out, fx.UploadFile) == []
    # the file lies inside the volume and its input is kept, so it is cleaned up
    assert of(out, fx.DeleteFiles) == [fx.DeleteFiles(("/vol/out/x",))]
    [dead] = of(drv.done(A), fx.Publish)
    assert dead.queue == DEAD_QUEUE
    assert dict(dead.headers)["x-iterum-error-class"] == "invalid-output"
    assert drv.confirm(dead) == [fx.Ack(7)]


def test_flat_object_layout(make_driver: Callable[..., Driver]) -> None:
    drv = make_driver(object_layout="flat")
    started(drv)
    drv.ready_input(7, A)
    [upload] = drv.output([A], ["edges.jpg"])
    assert upload.key == "iterum_data/edges.jpg"


# --- deterministic output ids (§16.15) -------------------------------------------------------


def _ids(effects: list[fx.Effect]) -> list[str]:
    return [pb.message_id for pb in of(effects, fx.Publish) if pb.queue == OUT_QUEUE]


def test_ids_follow_the_index_among_outputs_with_the_same_predecessors(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    outs = [drv.output([A], [f"{i}.jpg"]) for i in range(3)]
    outs.append(drv.output([A, B], ["ab.jpg"]))
    outs.append(drv.output([B, A], ["ba.jpg"]))
    keys = [of(o, fx.UploadFile)[0].key for o in outs]
    expected = [output_id(STEP, [A], i) for i in range(3)]
    expected += [output_id(STEP, [A, B], 0), output_id(STEP, [A, B], 1)]
    assert keys == [f"iterum_data/{e}/{n}" for e, n in
                    zip(expected, ["0.jpg", "1.jpg", "2.jpg", "ab.jpg", "ba.jpg"], strict=True)]
    assert len(set(expected)) == 5
    published = _ids(drv.record([u for o in outs for u in o]))
    assert sorted(published) == sorted(expected)


def test_redelivered_input_yields_the_same_ids(drv: Driver) -> None:
    started(drv)

    def one_run(tag: int) -> list[str]:
        drv.ready_input(tag, A)
        outs = [drv.output([A], [f"{i}.jpg"]) for i in range(3)]
        drv.done(A)
        return _ids(drv.record([u for o in outs for u in o]))

    first = one_run(7)
    assert of(drv.effects, fx.Ack) == [fx.Ack(7)]
    second = one_run(8)  # e.g. the upstream published it again after a crash
    assert of(drv.effects, fx.Ack) == [fx.Ack(7), fx.Ack(8)]
    assert first == second == [output_id(STEP, [A], i) for i in range(3)]


def test_requeued_input_yields_the_same_ids(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    uploads = drv.output([A])
    drv.done(A)
    [pub] = of(drv.upload(uploads), fx.Publish)
    for _ in range(4):  # publish_attempts is 5
        [pub] = of(drv.reject(pub), fx.Publish)
    assert of(drv.reject(pub), fx.Nack) == [fx.Nack(7, requeue=True)]
    drv.ready_input(8, A)
    [again] = of(drv.output([A]), fx.UploadFile)
    assert again.key == of(uploads, fx.UploadFile)[0].key


def test_late_output_after_the_ack_gets_a_fresh_id(drv: Driver) -> None:
    started(drv)
    drv.ready_input(7, A)
    early = drv.output([A], ["early.jpg"])
    drv.done(A)
    drv.record(early)
    assert drv.state(A) == "acked"
    late = drv.output([A], ["late.jpg"])  # allowed: outputs after done_with (§15)
    assert of(late, fx.UploadFile)[0].key == f"iterum_data/{output_id(STEP, [A], 1)}/late.jpg"
    assert len(set(_ids(drv.effects + drv.record(late)))) == 2
