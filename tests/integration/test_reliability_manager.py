"""The manager misbehaves (docs/reliability.md, case 9; §16.11): 404, 409, a dropped
connection, JSON of the wrong shape. Every failure is retried within
SIDECAR_MANAGER_RETRY_SECONDS while fragments keep flowing; a manager that never answers
usably ends the run with exit 1 and one error line. (404, 500 and non-JSON followed by
success, and a manager that answers 500 or is unreachable throughout: test_end_to_end.py.)
"""

from __future__ import annotations

import pytest

from .harness import DROP, FakeManager, Pipeline
from .harness.rabbit import queue_counts
from .steps import check_descriptor, log_lines, start_step

pytestmark = pytest.mark.integration


def test_409_dropped_connections_and_wrong_json_are_retried_while_work_goes_on(
        pipeline: Pipeline, fake_manager: FakeManager):
    body = pipeline.send_input({"m.txt": "manager trouble"})
    fid = body["metadata"]["fragment_id"]
    failures = [409, DROP, (200, {"finished": "yes"}), (200, {"done": True}), (200, "[]"),
                DROP, 409]
    fake_manager.script(*failures)
    sidecar, trans = start_step(pipeline, "passthrough")
    [out] = pipeline.outputs(1)  # the fragment is processed whatever the manager says
    fake_manager.finish()
    sidecar.expect_exit(0, timeout=30)
    trans.expect_exit(0, timeout=30)

    check_descriptor(pipeline, out, predecessors=[fid],
                     contents={"out_m.txt": b"manager trouble"})
    statuses = [r.status for r in fake_manager.requests()]
    assert statuses[:len(failures)] == [409, None, 200, 200, 200, None, 409]
    assert statuses[-1] == 200  # then {"finished": true}
    retries = [ln for ln in log_lines(sidecar.logs, "WARNING") if "upstream check failed" in ln]
    assert len(retries) == len(failures)
    assert any("HTTP 409" in ln for ln in retries)
    assert any("'finished' is not a boolean" in ln for ln in retries)
    assert any("ConnectionError" in ln for ln in retries)
    assert log_lines(sidecar.logs, "ERROR") == []
    assert queue_counts(pipeline.input_queue) == (0, 0)


@pytest.mark.parametrize("answer", [404, 409, (200, "not json"), (200, {"finished": None})],
                         ids=["404", "409", "not-json", "finished-null"])
def test_a_manager_that_never_answers_usably_exits_1_with_one_line(
        pipeline: Pipeline, fake_manager: FakeManager, answer):
    body = pipeline.send_input({"w.txt": "work first"})
    fake_manager.script(*[answer] * 1000)
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "SIDECAR_MANAGER_RETRY_SECONDS": "2", "SIDECAR_LOG_LEVEL": "INFO"})
    sidecar.expect_exit(1, timeout=30)

    [error] = log_lines(sidecar.stderr, "ERROR")
    assert "[manager-unavailable]" in error and "did not answer usably for 2s" in error
    assert "Traceback" not in sidecar.logs
    sidecar.wait_for_log(r"exiting with code 1 .*\[manager-unavailable\]", timeout=1)
    assert fake_manager.polls >= 2
    # nothing lost: the input was finished (acked) or given back
    acked = [m.json()["metadata"]["predecessors"] for m in pipeline.outputs()]
    if acked:
        assert acked == [[body["metadata"]["fragment_id"]]]
        assert queue_counts(pipeline.input_queue) == (0, 0)
    else:
        assert queue_counts(pipeline.input_queue) == (1, 0)
    trans.kill()
