"""What the transformation may send wrong on fts.sock (docs/reliability.md, case 5; §16.4):
garbage, non-object and unknown frames, an oversized frame header, done_with for an
unknown id, a second kill, and outputs that point outside the volume (directly or through
a symlink) or at a missing file. Each is logged with a stable code and counted
(`iterum_sidecar_log_events_total{code}`); the sidecar never crashes; no data is lost (an
input whose output cannot be stored is dead-lettered with the reason, the rest complete).
"""

from __future__ import annotations

import os

import pytest

from .harness import Pipeline, S3Server
from .harness.rabbit import queue_counts
from .harness.raw import RawTransformation
from .steps import check_descriptor, dead_letters, metric, metrics

pytestmark = pytest.mark.integration

CODES = {  # log code -> how many times this test provokes it
    "frame-invalid-json": 2, "frame-unrecognised": 2, "frame-invalid-output": 1,
    "done-with-unknown": 1, "frame-rejected": 1, "second-kill": 1,
    "output-invalid-output": 1, "output-missing-file": 1, "output-unsafe-path": 1,
}


def output(pred: str, path: str, name: str = "out.txt") -> dict:
    """What pyterum's produce() sends for one file."""
    return {"files": [{"name": name, "path": path}],
            "metadata": {"output_channel": None, "custom": None, "fragment_id": None,
                         "predecessors": [pred]}}


def test_bad_frames_and_bad_outputs_are_logged_counted_and_lose_nothing(
        pipeline: Pipeline, s3: S3Server):
    names = ("outside", "missing", "symlink", "good")
    bodies = {n: pipeline.send_input({f"{n}.txt": f"input {n}"}) for n in names}
    ids = {n: b["metadata"]["fragment_id"] for n, b in bodies.items()}
    upload = s3.stall(op="PutObject")  # released once the second kill is in
    sidecar = pipeline.start_sidecar(SIDECAR_MAX_FRAME_BYTES="64KiB")
    pipeline.wait_for_sockets()
    raw = RawTransformation(pipeline.volume)
    received = {raw.receive()["metadata"]["fragment_id"] for _ in names}
    assert received == set(ids.values())

    # frames that are not messages: skipped, the connection keeps working
    raw.send(b"this is not JSON")
    raw.send(b"\xff\xfe\x00 binary")
    raw.send([1, 2, 3])
    raw.send({"hello": "world"})
    raw.send({"files": [{"name": "x", "path": "/v/x"}], "metadata": "not an object"})
    raw.send({"fragment_id": "f" * 64})  # done_with for a fragment nobody sent
    # outputs the sidecar must not upload
    out_dir = pipeline.volume / "output"
    out_dir.mkdir()
    os.symlink("/etc/hostname", out_dir / "link.txt")
    (out_dir / "good.txt").write_text("good output")
    raw.send(output(ids["outside"], "/etc/passwd"))
    raw.send(output(ids["missing"], str(out_dir / "never-written.txt")))
    raw.send(output(ids["symlink"], str(out_dir / "link.txt")))
    raw.send(output(ids["good"], str(out_dir / "good.txt")))
    for n in names:
        raw.send({"fragment_id": ids[n]})  # done_with

    # an oversized header breaks the framing of its connection: only that one is dropped
    other = RawTransformation(pipeline.volume, tts=False)
    other.send_raw((1 << 30).to_bytes(4, "little") + b"{")
    assert other.fts_closed_by_peer()

    letters = dead_letters(pipeline, 3)
    assert upload.wait_hit(15)  # the good output's PUT is held: the sidecar has work left
    pipeline.finish_upstream()
    assert raw.receive() == {"status": "complete"}
    raw.send({"status": "complete"})
    raw.send({"status": "complete"})  # a second kill: the original panicked (exit 2)
    sidecar.wait_for_log(r"\[second-kill\]", timeout=15)
    assert sidecar.alive
    samples = metrics(sidecar)
    upload.release()
    [good] = pipeline.outputs(1)
    raw.close()
    sidecar.expect_exit(0, timeout=30)

    # no data loss: the good output is published, the others' inputs are dead letters
    check_descriptor(pipeline, good, predecessors=[ids["good"]],
                     contents={"out.txt": b"good output"})
    reasons = {m.json()["metadata"]["fragment_id"]: m.headers["x-iterum-error-class"]
               for m in letters}
    assert reasons == {ids["outside"]: "invalid-output", ids["missing"]: "missing-file",
                       ids["symlink"]: "unsafe-path"}
    assert s3.count("PutObject") == 1  # nothing outside the volume was read and uploaded
    # clear logs and counters, no crash
    assert "Traceback" not in sidecar.logs
    for code, n in CODES.items():
        assert sidecar.logs.count(f"[{code}]") == n, code
    for code, n in CODES.items():
        assert metric(samples, "iterum_sidecar_log_events_total", level=level(code),
                      code=code) == n, code
    assert queue_counts(pipeline.input_queue) == (0, 0)


def level(code: str) -> str:
    return "warning" if code in ("done-with-unknown", "second-kill") else "error"
