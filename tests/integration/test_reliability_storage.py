"""Transient S3 faults (docs/reliability.md, case 2): 5xx, SlowDown, a reset connection, a
request that never answers. Injected by the S3 endpoint in front of moto (harness/s3.py).
Each is retried with jittered backoff and the fragment completes once S3 answers again; an
outage longer than the retry budget gives the input back to the broker (never a hang,
never a dead letter), and it completes once S3 recovers: exactly once, with the same ids.
"""

from __future__ import annotations

import pytest

from .harness import Pipeline, S3Server
from .harness.rabbit import queue_counts
from .steps import (
    check_descriptor,
    check_lineage,
    dead_letters,
    finish_step,
    log_lines,
    start_step,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.s3]  # also on RGW (-m s3 --s3=rgw)


def test_download_and_upload_faults_are_retried_until_s3_answers(pipeline: Pipeline,
                                                                 s3: S3Server):
    body = pipeline.send_input({"flaky.txt": "eventually"})
    fid = body["metadata"]["fragment_id"]
    key = "iterum_data/flaky.txt"
    # GET: 503 SlowDown twice, then a reset connection, then no answer (timeout), then ok
    s3.fail(2, 503, "SlowDown", op="GetObject", key=key)
    s3.drop(1, op="GetObject", key=key)
    s3.stall(1, op="GetObject", key=key)
    # PUT: 500 InternalError, 503 ServiceUnavailable, then ok
    s3.fail(1, 500, "InternalError", "We encountered an internal error.", op="PutObject")
    s3.fail(1, 503, "ServiceUnavailable", "Reduce your request rate.", op="PutObject")
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "SIDECAR_STORAGE_TIMEOUT": "1", "SIDECAR_STORAGE_ATTEMPTS": "6"})
    [out] = pipeline.outputs(1)
    lineage = pipeline.lineage(1)
    finish_step(pipeline, sidecar, trans)

    check_descriptor(pipeline, out, predecessors=[fid],
                     contents={"out_flaky.txt": b"eventually"})
    check_lineage(pipeline, [out], lineage)
    gets = [r for r in s3.requests() if r.op == "GetObject" and r.key == key]
    assert [r.fault for r in gets] == ["status", "status", "drop", "stall", None]
    assert gets[-1].status == 200
    puts = [r for r in s3.requests() if r.op == "PutObject"]
    assert [r.fault for r in puts] == ["status", "status", None]
    retries = [ln for ln in log_lines(sidecar.logs, "WARNING") if "S3 attempt" in ln]
    assert len(retries) == 6  # four for the GET, two for the PUT
    assert any("SlowDown" in ln for ln in retries)
    assert any("InternalError" in ln for ln in retries)
    assert any("Timeout" in ln for ln in retries)  # the stalled request
    # every retry line names the object and the fragment
    out_id = out.json()["metadata"]["fragment_id"]
    down = f"the download of {pipeline.input_bucket}/{key}, fragment {fid}"
    up = f"the upload of {pipeline.output_bucket}/{out.json()['files'][0]['path']}, " \
         f"fragment {out_id}"
    assert [ln.endswith(down) for ln in retries].count(True) == 4, retries
    assert [ln.endswith(up) for ln in retries].count(True) == 2, retries
    assert trans.record()["received"][0]["fragment_id"] == fid  # once: no requeue needed
    assert len(trans.record()["received"]) == 1
    assert dead_letters(pipeline) == []
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_a_download_outage_longer_than_the_budget_requeues_then_completes(
        pipeline: Pipeline, s3: S3Server):
    body = pipeline.send_input({"outage.txt": "after the outage"})
    fid = body["metadata"]["fragment_id"]
    outage = s3.fail(None, 503, "ServiceUnavailable", op="GetObject")  # until cleared
    sidecar, trans = start_step(pipeline, "passthrough",
                                sidecar_env={"SIDECAR_STORAGE_ATTEMPTS": "3"})
    # the budget (3 attempts) runs out: the input goes back to the broker, not dead
    sidecar.wait_for_log(r"\[requeued-storage-unavailable\] download failed: "
                         r"ServiceUnavailable.*after 3 attempts", timeout=30)
    sidecar.wait_for_log(r"\[redelivered\]", timeout=30)  # and comes back
    # ... and its download is tried again (logged before that GET reaches S3: wait for it)
    assert wait_until(lambda: outage.hits >= 4, timeout=30), outage.hits
    assert trans.record().get("received", []) == []  # nothing half-downloaded reached it

    s3.clear_faults()  # S3 recovers
    [out] = pipeline.outputs(1)
    finish_step(pipeline, sidecar, trans)
    check_descriptor(pipeline, out, predecessors=[fid],
                     contents={"out_outage.txt": b"after the outage"})
    assert [r["fragment_id"] for r in trans.record()["received"]] == [fid]
    assert dead_letters(pipeline) == []
    assert pipeline.outputs() == []
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_an_upload_outage_requeues_the_input_and_the_retry_publishes_once(
        pipeline: Pipeline, s3: S3Server):
    body = pipeline.send_input({"up.txt": "upload me"})
    fid = body["metadata"]["fragment_id"]
    outage = s3.fail(None, 503, "SlowDown", op="PutObject")
    sidecar, trans = start_step(pipeline, "passthrough",
                                sidecar_env={"SIDECAR_STORAGE_ATTEMPTS": "2"})
    # the output cannot be stored: its input is given back instead of acked
    sidecar.wait_for_log(r"\[output-storage-unavailable\] upload failed.*requeued", timeout=30)
    sidecar.wait_for_log(r"\[requeued-storage-unavailable\]", timeout=30)
    assert pipeline.outputs() == []  # nothing published for an output not in S3
    assert outage.hits >= 2

    s3.clear_faults()
    assert wait_until(lambda: len(trans.record().get("received", [])) >= 2, timeout=30)
    [out] = pipeline.outputs(1)
    finish_step(pipeline, sidecar, trans)
    # processed twice, published once: the same deterministic id and object key
    assert {r["fragment_id"] for r in trans.record()["received"]} == {fid}
    check_descriptor(pipeline, out, predecessors=[fid], contents={"out_up.txt": b"upload me"})
    assert pipeline.outputs() == [] and len(pipeline.lineage()) == 1
    assert dead_letters(pipeline) == []
    assert queue_counts(pipeline.input_queue) == (0, 0)
