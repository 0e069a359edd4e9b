"""End-to-end integrity (docs/reliability.md, "Integrity"): a GET whose body is not the
object (a flipped byte, a body cut short) is retried like any transient fault; one that
stays wrong is dead-lettered with the reason `integrity` while the other fragments flow.
The SHA-256 of every file moved is in the journal and in the OpenLineage facets. The
faults are the S3 harness's (`s3.corrupt`, `s3.truncate`), on both download paths: the
direct signed GET (the default) and minio's own `get_object`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from .harness import Pipeline, S3Server
from .harness.rabbit import queue_counts
from .steps import (
    check_descriptor,
    dead_letters,
    finish_step,
    log_lines,
    start_step,
    volume_files,
)

pytestmark = pytest.mark.integration
PATHS = ["direct", "minio"]  # SIDECAR_S3_SMALL_OBJECTS: the two GET paths


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def journal_events(pipeline: Pipeline, kind: str) -> list[dict]:
    lines = []
    for segment in sorted((pipeline.volume / ".sidecar" / "journal").glob("run*.jsonl")):
        lines += [json.loads(line) for line in segment.read_text().splitlines()]
    return [ln["event"] for ln in lines if ln.get("event", {}).get("kind") == kind]


@pytest.mark.parametrize("path", PATHS)
def test_a_corrupted_or_cut_download_is_retried_and_the_hashes_are_recorded(
        pipeline: Pipeline, s3: S3Server, tmp_path: Path, path: str):
    pytest.importorskip("openlineage.client")
    flipped, cut = bytes(range(256)) * 64, b"a body cut short " * 1000
    body = pipeline.send_input({"flipped.bin": flipped, "cut.txt": cut})
    fid = body["metadata"]["fragment_id"]
    s3.corrupt(1, key="iterum_data/flipped.bin")
    s3.truncate(1, key="iterum_data/cut.txt")
    lineage_file = tmp_path / "openlineage.jsonl"
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "SIDECAR_S3_SMALL_OBJECTS": path, "SIDECAR_STORAGE_ATTEMPTS": "3",
        "SIDECAR_OPENLINEAGE": "file", "SIDECAR_OPENLINEAGE_URL": str(lineage_file)})
    [out] = pipeline.outputs(1)
    finish_step(pipeline, sidecar, trans)

    check_descriptor(pipeline, out, predecessors=[fid],
                     contents={"out_flipped.bin": flipped, "out_cut.txt": cut})
    gets = {key: [r.fault for r in s3.requests() if r.op == "GetObject" and r.key == key]
            for key in ("iterum_data/flipped.bin", "iterum_data/cut.txt")}
    assert gets == {"iterum_data/flipped.bin": ["corrupt", None],
                    "iterum_data/cut.txt": ["truncate", None]}
    retries = [ln for ln in log_lines(sidecar.logs, "WARNING") if "S3 attempt" in ln]
    assert any("IntegrityError: md5 mismatch" in ln for ln in retries), retries
    assert any("IntegrityError: length mismatch" in ln for ln in retries), retries
    assert len(trans.record()["received"]) == 1 and dead_letters(pipeline) == []

    # the SHA-256 of what was downloaded and uploaded: in the journal...
    expected = {"flipped.bin": sha(flipped), "cut.txt": sha(cut)}
    downloaded = journal_events(pipeline, "FileDownloaded")
    assert sorted(e["sha256"] for e in downloaded) == sorted(expected.values())
    assert all(e["attempts"] == 2 for e in downloaded)
    uploaded = journal_events(pipeline, "FileUploaded")
    assert sorted(e["sha256"] for e in uploaded) == sorted(expected.values())
    # ... and in the OpenLineage facets, of inputs and outputs
    [complete] = [e for e in map(json.loads, lineage_file.read_text().splitlines())
                  if e["eventType"] == "COMPLETE"]
    facets = {d["name"].rsplit("/", 1)[-1]: d["facets"]["iterum_file"]
              for d in complete["inputs"] + complete["outputs"]}
    assert {name: f["sha256"] for name, f in facets.items()} == {
        **expected, **{f"out_{name}": digest for name, digest in expected.items()}}
    assert facets["cut.txt"]["size"] == len(cut)


@pytest.mark.parametrize("path", PATHS)
def test_a_download_that_stays_wrong_is_dead_lettered_and_the_rest_flows(
        pipeline: Pipeline, s3: S3Server, path: str):
    corrupt = pipeline.send_input({"corrupt.bin": b"\x00" * 5000})
    good = pipeline.send_input({"good.txt": "fine"})
    cut = pipeline.send_input({"cut.bin": b"\x01" * 5000})
    corrupted = s3.corrupt(None, key="iterum_data/corrupt.bin")  # until cleared
    truncated = s3.truncate(None, key="iterum_data/cut.bin")
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "SIDECAR_S3_SMALL_OBJECTS": path, "SIDECAR_STORAGE_ATTEMPTS": "3"})
    [out] = pipeline.outputs(1)
    dead = dead_letters(pipeline, 2)
    finish_step(pipeline, sidecar, trans)

    check_descriptor(pipeline, out, predecessors=[good["metadata"]["fragment_id"]],
                     contents={"out_good.txt": b"fine"})
    headers = {m.json()["metadata"]["fragment_id"]: m.properties.headers for m in dead}
    for body, check in ((corrupt, "md5"), (cut, "length")):
        h = headers[body["metadata"]["fragment_id"]]
        assert h["x-iterum-error-class"] == "integrity", h
        assert h["x-iterum-attempts"] == "3", h
        assert f"IntegrityError: {check} mismatch" in h["x-iterum-error"], h
    assert (corrupted.hits, truncated.hits) == (3, 3)  # retried, then given up: no requeue
    assert [r["fragment_id"] for r in trans.record()["received"]] == [
        good["metadata"]["fragment_id"]]  # the bad bytes never reached the transformation
    assert volume_files(pipeline.volume) == []  # no partial file left
    assert queue_counts(pipeline.input_queue) == (0, 0)
