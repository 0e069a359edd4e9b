"""The sidecar, end to end: `python -m sidecar` against the real RabbitMQ, the moto S3 HTTP
server and unmodified pyterum 0.6.6 transformations, each in its own process.

Shutdown, ack gating and S3 request economy have their own files (test_shutdown.py,
test_ack_gating.py, test_s3_economy.py).
"""

from __future__ import annotations

import pytest

from .harness import Pipeline
from .harness.rabbit import queue_counts
from .steps import (
    by_predecessors,
    check_descriptor,
    check_lineage,
    finish_step,
    log_lines,
    start_step,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.s3]  # also on RGW (-m s3 --s3=rgw)


# --- shapes of steps: 1→1, 1→N, N→1, 1→0 -------------------------------------------------


def test_passthrough_one_to_one_publishes_descriptor_objects_and_lineage(pipeline: Pipeline):
    inputs = [
        pipeline.send_input({"a.txt": b"alpha"}),
        pipeline.send_input({"b.bin": bytes(range(256)) * 40, "c.json": '{"c": 3}'}),
        pipeline.send_input({"d.txt": "delta", "empty.txt": b"", "sub/dir/e.txt": "nested"}),
    ]
    contents = {"a.txt": b"alpha", "b.bin": bytes(range(256)) * 40, "c.json": b'{"c": 3}',
                "d.txt": b"delta", "empty.txt": b"", "sub/dir/e.txt": b"nested"}
    sidecar, trans = start_step(pipeline, "passthrough")
    outputs = pipeline.outputs(len(inputs))
    lineage = pipeline.lineage(len(inputs))
    finish_step(pipeline, sidecar, trans)

    grouped = by_predecessors(outputs)
    assert len(grouped) == len(inputs), grouped
    for msg in outputs:
        [pred] = msg.json()["metadata"]["predecessors"]
        [body] = [b for b in inputs if b["metadata"]["fragment_id"] == pred]
        check_descriptor(pipeline, msg, predecessors=[pred], contents={
            f"out_{f['name']}": contents[f["name"]] for f in body["files"]})
        assert msg.routing_key == pipeline.output_queue
        assert "target_queue" not in msg.json()["metadata"]
        assert "custom" not in msg.json()["metadata"]
    assert len({m.json()["metadata"]["fragment_id"] for m in outputs}) == len(inputs)
    check_lineage(pipeline, outputs, lineage)
    assert pipeline.outputs() == [] and pipeline.lineage() == []  # nothing more
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_fanout_one_to_many_publishes_every_output(pipeline: Pipeline):
    inputs = [pipeline.send_input({f"f{i}.txt": f"file {i}"}, custom={"fanout": 3})
              for i in range(2)]
    sidecar, trans = start_step(pipeline, "fanout")
    outputs = pipeline.outputs(6)
    lineage = pipeline.lineage(6)
    finish_step(pipeline, sidecar, trans)

    grouped = by_predecessors(outputs)
    ids = {b["metadata"]["fragment_id"]: b for b in inputs}
    assert sorted(p for (p,) in grouped) == sorted(ids), grouped.keys()
    for msg in outputs:
        [pred] = msg.json()["metadata"]["predecessors"]
        [name] = [f["name"] for f in ids[pred]["files"]]
        [out_file] = msg.json()["files"]
        index = out_file["name"].split("_", 1)[0]  # fan<i>
        check_descriptor(pipeline, msg, predecessors=[pred], contents={
            f"{index}_{name}": f"file {name[1]}".encode()})
    for (pred,), bodies in grouped.items():
        names = sorted(b["files"][0]["name"] for b in bodies)
        assert names == [f"fan{i}_{ids[pred]['files'][0]['name']}" for i in range(3)]
    assert len({m.json()["metadata"]["fragment_id"] for m in outputs}) == 6  # all distinct
    check_lineage(pipeline, outputs, lineage)
    assert pipeline.outputs() == []
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_pair_many_to_one_output_names_both_inputs(pipeline: Pipeline):
    """The transformation holds an input until its partner arrives; the held input is not
    lost, and the one left alone at the end is flushed 1→1 after the kill."""
    inputs = [pipeline.send_input({f"p{i}.txt": f"part {i}"}) for i in range(3)]
    ids = [b["metadata"]["fragment_id"] for b in inputs]
    names = {b["metadata"]["fragment_id"]: b["files"][0]["name"] for b in inputs}
    sidecar, trans = start_step(pipeline, "pair")
    [pair] = pipeline.outputs(1)  # the third input waits for a partner that never comes
    lineage = pipeline.lineage(1)
    # the pair's inputs are acked; the held one is not (no done_with yet), nor is it killed
    assert wait_until(lambda: queue_counts(pipeline.input_queue) == (0, 1)), \
        queue_counts(pipeline.input_queue)
    assert trans.record()["kill_received"] is False
    finish_step(pipeline, sidecar, trans)
    [single] = pipeline.outputs(1)
    lineage += pipeline.lineage(1)

    both = pair.json()["metadata"]["predecessors"]
    [alone] = single.json()["metadata"]["predecessors"]
    assert len(both) == 2 and sorted([*both, alone]) == sorted(ids)
    check_descriptor(pipeline, pair, predecessors=both, contents={
        f"pair_{names[i]}": f"part {names[i][1]}".encode() for i in both})
    check_descriptor(pipeline, single, predecessors=[alone], contents={
        f"pair_{names[alone]}": f"part {names[alone][1]}".encode()})
    check_lineage(pipeline, [pair, single], lineage)
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_filter_one_to_zero_acks_inputs_and_publishes_nothing(pipeline: Pipeline, s3):
    inputs = [pipeline.send_input({f"x{i}.txt": "x"}) for i in range(3)]
    sidecar, trans = start_step(pipeline, "filter")
    finish_step(pipeline, sidecar, trans)

    received = [r["fragment_id"] for r in trans.record()["received"]]
    assert sorted(received) == sorted(b["metadata"]["fragment_id"] for b in inputs)
    assert sorted(trans.record()["done_with"]) == sorted(received)
    assert pipeline.outputs() == []
    assert pipeline.lineage() == []
    assert s3.count("PutObject") == 0
    assert queue_counts(pipeline.input_queue) == (0, 0)


# --- metadata: custom, missing custom, predecessors null -------------------------------


def test_custom_metadata_reaches_transformation_and_passes_through(pipeline: Pipeline):
    custom = {"k": [1, {"n": None}], "text": "ünïcødé <&>", "nested": {"deep": [True, 2.5]}}
    with_custom = pipeline.send_input({"c.txt": "with custom"}, custom=custom)
    without = pipeline.send_input({"n.txt": "no custom"})
    null_preds = pipeline.publish_fragment([pipeline.upload_input("z.txt", "null preds")],
                                           predecessors=None)
    assert "custom" not in without["metadata"]
    assert null_preds["metadata"]["predecessors"] is None
    sidecar, trans = start_step(pipeline, "custom_echo")
    outputs = pipeline.outputs(3)
    lineage = pipeline.lineage(3)
    finish_step(pipeline, sidecar, trans)

    received = {r["fragment_id"]: r for r in trans.record()["received"]}
    wid, nid, zid = (b["metadata"]["fragment_id"] for b in (with_custom, without, null_preds))
    assert sorted(received) == sorted([wid, nid, zid])
    assert received[wid]["custom"] == custom
    assert received[nid]["custom"] is None
    assert received[zid]["predecessors"] is None  # forwarded as received, like Go
    assert received[nid]["predecessors"] == []

    published = {m.json()["metadata"]["predecessors"][0]: m for m in outputs}
    assert sorted(published) == sorted([wid, nid, zid])
    body = check_descriptor(pipeline, published[wid], predecessors=[wid],
                            contents={"echo_c.txt": b"with custom"})
    assert body["metadata"]["custom"] == custom
    for fid, name, data in ((nid, "n.txt", b"no custom"), (zid, "z.txt", b"null preds")):
        body = check_descriptor(pipeline, published[fid], predecessors=[fid],
                                contents={f"echo_{name}": data})
        assert "custom" not in body["metadata"]
    check_lineage(pipeline, outputs, lineage)
    assert queue_counts(pipeline.input_queue) == (0, 0)


# --- output_channel and queue_mapping -----------------------------------------------------


def test_output_channel_is_published_to_the_mapped_queue(pipeline: Pipeline):
    mapped = pipeline.rabbit.track(f"{pipeline.hash}-rejects-verbatim")
    pipeline.config = {"queue_mapping": {"rejects": mapped}}
    body = pipeline.send_input({"r.txt": "route me"})
    fid = body["metadata"]["fragment_id"]
    sidecar, trans = start_step(pipeline, "channel",
                                transformation_env={"OUTPUT_CHANNELS": "rejects,-"})
    [default] = pipeline.outputs(1)
    # nobody declared the mapped queue: the sidecar does, before its first publish to it
    assert wait_until(lambda: pipeline.rabbit.exists(mapped))
    [rejected] = pipeline.rabbit.drain(mapped, 1, timeout=30)
    lineage = pipeline.lineage(2)
    finish_step(pipeline, sidecar, trans)

    assert rejected.routing_key == mapped
    out = check_descriptor(pipeline, rejected, predecessors=[fid],
                           contents={"rejects_r.txt": b"route me"})
    assert out["metadata"]["target_queue"] == mapped
    out = check_descriptor(pipeline, default, predecessors=[fid],
                           contents={"default_r.txt": b"route me"})
    assert "target_queue" not in out["metadata"]
    check_lineage(pipeline, [default, rejected], lineage)
    assert pipeline.outputs() == [] and pipeline.rabbit.drain(mapped) == []
    pipeline.rabbit.declare(mapped)  # same flags as the Iterum peers, or PRECONDITION_FAILED


# --- large socket messages ------------------------------------------------------------------


def test_socket_messages_over_one_mib_in_both_directions(pipeline: Pipeline):
    mib = 1 << 20
    blob = "b" * (mib + 1234)
    body = pipeline.send_input({"big.txt": "big"}, custom={"blob": blob})
    fid = body["metadata"]["fragment_id"]
    sidecar, trans = start_step(pipeline, "big_message", transformation_env={
        "REQUIRE_BIG_INPUT": "1", "BIG_BYTES": str(2 * mib)})
    [out] = pipeline.outputs(1)
    lineage = pipeline.lineage(1)
    finish_step(pipeline, sidecar, trans)  # exit 3 if the input frame was not > 1 MiB

    notes = trans.record()["notes"]
    assert notes["all_inputs_over_1mib"] is True and notes["custom_bytes"][0] > mib
    published = check_descriptor(pipeline, out, predecessors=[fid],
                                 contents={"big_big.txt": b"big"})
    custom = published["metadata"]["custom"]
    assert len(custom["blob"]) == 2 * mib
    assert custom["blob"].startswith(fid)
    check_lineage(pipeline, [out], lineage)


# --- config files -----------------------------------------------------------------------------


def test_config_file_uploaded_after_start_reaches_the_transformation(pipeline: Pipeline, s3):
    """§16.3: `<hash>-iterum-config/iterum_config/<file>` → DATA_VOLUME_PATH/config/<file>,
    waited for when the fragmenter uploads it only after the sidecar started."""
    content = '{"threshold": 7, "when": "after the sidecar started"}'
    pipeline.config = {"config_files": {"settings": "settings.json"}, "threshold": 7}
    body = pipeline.send_input({"in.txt": "input"})
    fid = body["metadata"]["fragment_id"]
    sidecar = pipeline.start_sidecar()
    pipeline.wait_for_sockets()
    # the sidecar has looked for it (and not found it) before it is uploaded
    s3.wait_for("GetObject", bucket=pipeline.config_bucket, timeout=15)
    assert not (pipeline.volume / "config" / "settings.json").exists()
    assert (pipeline.volume / "config").is_dir()  # pyterum asserts it exists
    pipeline.upload_config("settings.json", content)
    trans = pipeline.start_transformation("config_reader")
    [out] = pipeline.outputs(1)
    finish_step(pipeline, sidecar, trans)

    notes = trans.record()["notes"]
    assert notes["config_path"] == str(pipeline.volume / "config" / "settings.json")
    assert notes["config_content"] == content
    check_descriptor(pipeline, out, predecessors=[fid],
                     contents={f"config_{fid[:12]}.txt": content.encode()})
    assert s3.count("GetObject", bucket=pipeline.config_bucket,
                    key="iterum_config/settings.json") >= 2


# --- the upstream check (§9, §16.11) ---------------------------------------------------------


def test_upstream_check_survives_404_500_bad_json_then_finishes(pipeline: Pipeline,
                                                                fake_manager):
    body = pipeline.send_input({"u.txt": "upstream"})
    fake_manager.script(404, (500, "boom"), (200, "not json"), (200, {"finished": False}))
    fake_manager.finish()  # once the script is used up
    sidecar, trans = start_step(pipeline, "passthrough")
    sidecar.expect_exit(0, timeout=30)
    trans.expect_exit(0, timeout=30)

    requests = fake_manager.requests()
    assert [r.status for r in requests] == [404, 500, 200, 200, 200], requests
    expected = f"/pipeline/{pipeline.hash}/{pipeline.name}/upstream_finished"
    assert {r.path for r in requests} == {expected}
    assert all(r.method == "GET" for r in requests)
    [out] = pipeline.outputs(1)
    check_descriptor(pipeline, out, predecessors=[body["metadata"]["fragment_id"]],
                     contents={"out_u.txt": b"upstream"})
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_dummy_manager_mode_completes(pipeline: Pipeline, fake_manager):
    body = pipeline.send_input({"d.txt": "dummy"})
    sidecar, trans = start_step(pipeline, "passthrough",
                                sidecar_env={"MANAGER_URL": "http://dummy-manager:3001"})
    sidecar.expect_exit(0, timeout=30)
    trans.expect_exit(0, timeout=30)
    assert fake_manager.requests() == []
    [out] = pipeline.outputs(1)
    check_descriptor(pipeline, out, predecessors=[body["metadata"]["fragment_id"]],
                     contents={"out_d.txt": b"dummy"})
    assert queue_counts(pipeline.input_queue) == (0, 0)


@pytest.mark.parametrize("failure", ["http-500", "unreachable"])
def test_manager_never_usable_exits_1_with_one_error_line(pipeline: Pipeline, fake_manager,
                                                          failure: str):
    if failure == "http-500":
        fake_manager.script(*[(500, "down")] * 1000)
        url = fake_manager.url
    else:
        url = "http://127.0.0.1:9"  # discard port: connection refused
    sidecar = pipeline.start_sidecar(MANAGER_URL=url, SIDECAR_MANAGER_RETRY_SECONDS="2",
                                     SIDECAR_LOG_LEVEL="INFO")
    sidecar.expect_exit(1, timeout=30)
    assert "Traceback" not in sidecar.logs
    errors = log_lines(sidecar.stderr, "ERROR")
    assert len(errors) == 1, errors  # the retries are warnings; the exit refers to it
    assert "manager" in errors[0] and f"{url}/pipeline/{pipeline.hash}/" in errors[0], errors
    sidecar.wait_for_log(r"exiting with code 1 after [0-9.]+s: \[manager-unavailable\]",
                         timeout=1)
    if failure == "http-500":
        assert fake_manager.polls >= 2  # it retried before giving up


# --- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value"), [
    ("MQ_INPUT_QUEUE", None),  # required, missing
    ("MINIO_OUTPUT_BUCKET", ""),  # required, empty
    ("MQ_PREFETCH_COUNT", "ten"),
    ("MQ_PREFETCH_COUNT", "-1"),
])
def test_configuration_error_exits_1_with_one_line_naming_the_variable(
        pipeline: Pipeline, variable: str, value: str | None):
    sidecar = pipeline.start_sidecar(**{variable: value})
    sidecar.expect_exit(1, timeout=20)
    lines = sidecar.stderr.splitlines()
    assert len(lines) == 1, sidecar.stderr
    assert variable in lines[0], lines
    assert "Traceback" not in sidecar.logs
    assert sidecar.stdout == ""
    assert not (pipeline.volume / "tts.sock").exists()


# --- a malformed input ----------------------------------------------------------------------


def test_malformed_input_is_dead_lettered_and_the_rest_completes(pipeline: Pipeline):
    good = [pipeline.send_input({"g1.txt": "good 1"})]
    garbage = b"this is not JSON {"
    pipeline.rabbit.publish(pipeline.input_queue, garbage)
    good.append(pipeline.send_input({"g2.txt": "good 2"}))
    sidecar, trans = start_step(pipeline, "passthrough")
    outputs = pipeline.outputs(2)
    [dead] = pipeline.rabbit.drain(pipeline.dead_queue, 1, timeout=30)
    finish_step(pipeline, sidecar, trans)

    assert dead.body == garbage
    headers = dead.headers
    assert headers["x-iterum-error-class"] == "invalid-json", headers
    assert headers["x-iterum-error"], headers
    assert headers["x-iterum-state"] == "received", headers
    assert str(headers["x-iterum-attempts"]) == "1", headers
    assert headers["x-iterum-step"] == pipeline.name, headers
    assert dead.properties.delivery_mode == 2

    ids = sorted(b["metadata"]["fragment_id"] for b in good)
    assert sorted(r["fragment_id"] for r in trans.record()["received"]) == ids
    assert sorted(m.json()["metadata"]["predecessors"][0] for m in outputs) == ids
    assert pipeline.rabbit.drain(pipeline.dead_queue) == []
    pipeline.rabbit.declare(pipeline.dead_queue)  # declared with the input queue's flags
    assert queue_counts(pipeline.input_queue) == (0, 0)
