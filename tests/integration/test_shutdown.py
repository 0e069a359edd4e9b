"""The end of the stream (protocol §12, §16.2): the kill only once upstream has finished and
the input queue is empty, then both processes exit 0 and leave nothing behind."""

from __future__ import annotations

import pytest

from .harness import Pipeline
from .harness.rabbit import queue_counts
from .steps import check_descriptor, check_lineage, start_step, volume_files

pytestmark = pytest.mark.integration


@pytest.mark.s3  # config files: also on RGW
def test_full_shutdown_leaves_no_sockets_files_or_unacked_messages(pipeline: Pipeline,
                                                                   fake_manager):
    pipeline.config = {"config_files": {"settings": "settings.json", "model": "model.bin"}}
    pipeline.upload_config("settings.json", '{"a": 1}')
    pipeline.upload_config("model.bin", b"\x00model")
    inputs = [pipeline.send_input({f"s{i}.txt": f"shutdown {i}",
                                   f"deep/er/t{i}.bin": b"\x01" * 100}) for i in range(3)]
    ids = sorted(b["metadata"]["fragment_id"] for b in inputs)
    sidecar, trans = start_step(pipeline, "custom_echo")
    outputs = pipeline.outputs(3)
    lineage = pipeline.lineage(3)

    # Everything is processed, but upstream has not finished: no kill yet.
    polls = fake_manager.polls
    fake_manager.wait_for_polls(polls + 3)
    assert trans.record()["kill_received"] is False
    assert sidecar.alive and trans.alive

    pipeline.finish_upstream()
    trans.expect_exit(0, timeout=30)
    sidecar.expect_exit(0, timeout=30)

    record = trans.record()
    assert record["kill_received"] is True and record["done_sent"] is True
    assert sorted(r["fragment_id"] for r in record["received"]) == ids
    assert sorted(record["done_with"]) == ids
    for msg in outputs:
        [pred] = msg.json()["metadata"]["predecessors"]
        i = [b["metadata"]["fragment_id"] for b in inputs].index(pred)
        check_descriptor(pipeline, msg, predecessors=[pred], contents={
            f"echo_s{i}.txt": f"shutdown {i}".encode(), f"echo_deep/er/t{i}.bin": b"\x01" * 100})
    check_lineage(pipeline, outputs, lineage)

    assert not (pipeline.volume / "tts.sock").exists()
    assert not (pipeline.volume / "fts.sock").exists()
    # inputs and outputs are deleted; only the config files stay for the transformation
    assert volume_files(pipeline.volume) == ["config/model.bin", "config/settings.json"]
    assert not (pipeline.volume / pipeline.input_bucket).exists()  # its download dirs too
    assert queue_counts(pipeline.input_queue) == (0, 0)
    assert pipeline.outputs() == [] and pipeline.lineage() == []
    assert "Traceback" not in sidecar.logs
    summary = sidecar.wait_for_log(r"exiting with code 0 after [0-9.]+s: .*", timeout=1)
    assert "3 input acked" in summary.group(0) and "3 output recorded" in summary.group(0)


def test_kill_waits_until_the_input_queue_is_empty(pipeline: Pipeline, fake_manager):
    """Upstream is finished from the start, but with prefetch 1 the queue still holds
    ready messages: the sidecar keeps consuming until it is empty, then sends the kill."""
    fake_manager.finish()
    inputs = [pipeline.send_input({f"q{i}.txt": f"queued {i}"}) for i in range(4)]
    ids = sorted(b["metadata"]["fragment_id"] for b in inputs)
    sidecar, trans = start_step(pipeline, "passthrough",
                                sidecar_env={"MQ_PREFETCH_COUNT": "1"})
    trans.expect_exit(0, timeout=30)
    sidecar.expect_exit(0, timeout=30)

    assert sorted(r["fragment_id"] for r in trans.record()["received"]) == ids
    outputs = pipeline.outputs(4)
    assert sorted(m.json()["metadata"]["predecessors"][0] for m in outputs) == ids
    check_lineage(pipeline, outputs, pipeline.lineage(4))
    assert queue_counts(pipeline.input_queue) == (0, 0)
    assert fake_manager.polls >= 1
