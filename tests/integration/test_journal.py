"""The journal, end to end: a real step (`python -m sidecar`, RabbitMQ, the S3 server, a
pyterum transformation) records its run on the volume by default, and `iterum-sidecar
replay` re-runs the core on it offline and finds every decision the same.

With ITERUM_SIDECAR_RECORD_JOURNALS=<dir>, each scenario's journal is also copied to
<dir>/<scenario>.jsonl: that is how the fixtures in tests/unit/journals/ are made
(`ITERUM_SIDECAR_RECORD_JOURNALS=tests/unit/journals python -m pytest
tests/integration/test_journal.py`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .harness import Pipeline
from .harness.pipeline import REPO
from .harness.rabbit import queue_counts
from .steps import finish_step, start_step, volume_files, wait_until

pytestmark = pytest.mark.integration


def replay(journal: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "sidecar", "replay", str(journal), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def journal_of(pipeline: Pipeline, scenario: str) -> Path:
    """The run's journal directory; copied out as a fixture when asked to."""
    directory = pipeline.volume / ".sidecar" / "journal"
    segments = sorted(directory.glob("run*-seg*.jsonl"))
    assert segments, f"no journal in {directory}"
    target = os.environ.get("ITERUM_SIDECAR_RECORD_JOURNALS")
    if target:
        assert len(segments) == 1, "a fixture is one segment"
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(segments[0], Path(target) / f"{scenario}.jsonl")
    return directory


def replays_cleanly(journal: Path) -> str:
    done = replay(journal, "--limit", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replay OK: " in done.stdout and "every transition and effect as recorded" in \
        done.stdout
    return done.stdout


def test_passthrough_run_is_recorded_and_replays(pipeline: Pipeline):
    inputs = [pipeline.send_input({"a.txt": "alpha"}),
              pipeline.send_input({"b.bin": bytes(range(256)), "c.json": '{"c": 3}'}),
              pipeline.send_input({"d.txt": "delta"})]
    sidecar, trans = start_step(pipeline, "passthrough")
    pipeline.outputs(3)
    finish_step(pipeline, sidecar, trans)
    assert volume_files(pipeline.volume) == []  # the journal is not counted as litter

    out = replays_cleanly(journal_of(pipeline, "passthrough"))
    assert "inputs: 3 acked" in out and "outputs: 3 recorded" in out
    assert "step: exited, exit code 0 (done)" in out
    for body in inputs:
        fid = body["metadata"]["fragment_id"]
        [line] = [ln for ln in out.splitlines() if f" {fid[:12]} " in ln and "input" in ln]
        assert line.endswith("→ uploaded 0µs → published 0µs → acked") or line.endswith(
            "→ acked"), line


def test_pair_run_with_outputs_naming_two_inputs_replays(pipeline: Pipeline):
    for i in range(4):
        pipeline.send_input({f"p{i}.txt": f"part {i}"})
    sidecar, trans = start_step(pipeline, "pair")
    pipeline.outputs(2)
    finish_step(pipeline, sidecar, trans)

    out = replays_cleanly(journal_of(pipeline, "pair"))
    assert "inputs: 4 acked" in out and "outputs: 2 recorded" in out


def test_fanout_run_replays(pipeline: Pipeline):
    for i in range(2):
        pipeline.send_input({f"f{i}.txt": f"file {i}"}, custom={"fanout": 3})
    sidecar, trans = start_step(pipeline, "fanout")
    pipeline.outputs(6)
    finish_step(pipeline, sidecar, trans)

    out = replays_cleanly(journal_of(pipeline, "fanout"))
    assert "inputs: 2 acked" in out and "outputs: 6 recorded" in out


def test_dead_letter_run_replays(pipeline: Pipeline):
    pipeline.send_input({"g1.txt": "good 1"})
    pipeline.rabbit.publish(pipeline.input_queue, b"this is not JSON {")
    missing = pipeline.fragment([{"name": "gone.txt", "path": "iterum_data/gone.txt",
                                  "bucket": pipeline.input_bucket}])
    pipeline.ensure_bucket(pipeline.input_bucket)
    pipeline.rabbit.publish(pipeline.input_queue, missing)  # its object does not exist
    sidecar, trans = start_step(pipeline, "passthrough")
    pipeline.outputs(1)
    assert len(pipeline.rabbit.drain(pipeline.dead_queue, 2, timeout=30)) == 2
    finish_step(pipeline, sidecar, trans)

    out = replays_cleanly(journal_of(pipeline, "dead_letter"))
    assert "inputs: 2 dead_lettered, 1 acked" in out


def test_transformation_crash_and_reconnect_replays(pipeline: Pipeline):
    """The transformation is killed while it holds a fragment (pair waits for a partner);
    a new one connects within SIDECAR_TRANSFORMATION_GRACE and gets the fragment again."""
    body = pipeline.send_input({"solo.txt": "alone"})
    sidecar = pipeline.start_sidecar()
    pipeline.wait_for_sockets()
    holder = pipeline.start_transformation("pair")
    assert wait_until(lambda: len(holder.record().get("received", [])) == 1, timeout=30)
    holder.kill()
    sidecar.wait_for_log(r"transformation-disconnected", timeout=15)
    trans = pipeline.start_transformation("passthrough")
    [output] = pipeline.outputs(1)
    assert output.json()["metadata"]["predecessors"] == [body["metadata"]["fragment_id"]]
    finish_step(pipeline, sidecar, trans)
    assert queue_counts(pipeline.input_queue) == (0, 0)

    journal = journal_of(pipeline, "crash_reconnect")
    out = replays_cleanly(journal)
    fid = body["metadata"]["fragment_id"]
    [line] = [ln for ln in out.splitlines() if f" {fid[:12]} " in ln and "input" in ln]
    assert "dispatched" in line and line.count("dispatched") == 2  # sent again
    assert line.endswith("→ acked")


def test_a_sigterm_mid_run_is_recorded_and_replays(pipeline: Pipeline):
    """SIGTERM while fragments wait in the queue: the sidecar gives back what it cannot
    finish and exits 0; the journal ends with that decision and still replays."""
    for i in range(3):
        pipeline.send_input({f"s{i}.txt": f"stop {i}"})
    sidecar, trans = start_step(pipeline, "pair")  # holds one input: never done
    assert wait_until(lambda: len(trans.record().get("received", [])) >= 3, timeout=30)
    time.sleep(0.5)
    sidecar.terminate()
    sidecar.expect_exit(0, timeout=30)
    trans.stop()

    out = replays_cleanly(journal_of(pipeline, "sigterm"))
    assert "ShutdownRequested 1" in out
    assert "requeued" in out
