"""Bad input (docs/reliability.md, case 1): bodies that are not a valid RemoteFragmentDesc,
objects that do not exist, file names that would escape the volume. Each is dead-lettered
(§16.1) with its reason in headers, never sent to the transformation, and the other
fragments keep flowing; `iterum-sidecar dead-letters` lists them and requeues them after a
fix. (A body that is not JSON at all: test_end_to_end.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from .harness import Message, Pipeline, random_id
from .harness.pipeline import REPO, base_env
from .harness.rabbit import queue_counts
from .steps import check_descriptor, dead_letters, finish_step, start_step, wait_until

pytestmark = pytest.mark.integration


def dead_letter_cli(pipeline: Pipeline, *args: str, **env: str | None
                    ) -> subprocess.CompletedProcess:
    """`iterum-sidecar dead-letters ...` with the step's environment, as in its pod."""
    environ = {**base_env(), **pipeline.sidecar_env(**env), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "sidecar", "dead-letters", *args],
                          env=environ, capture_output=True, text=True, timeout=60)


def by_reason(letters: list[Message]) -> dict[str, list[Message]]:
    grouped: dict[str, list[Message]] = {}
    for m in letters:
        grouped.setdefault(m.headers["x-iterum-error-class"], []).append(m)
    return grouped


def test_bad_inputs_are_dead_lettered_with_reasons_and_the_rest_flows(pipeline: Pipeline,
                                                                      tmp_path):
    good = [pipeline.send_input({"g1.txt": "good one"})]
    fid = random_id
    bad = {
        "invalid-fragment-id": {"files": [], "metadata": {"fragment_id": "short"}},
        "invalid-descriptor": [{"files": []}],
        "missing-object": pipeline.fragment([{"name": "gone.txt", "path": "iterum_data/gone",
                                              "bucket": pipeline.input_bucket}],
                                            fragment_id=fid()),
    }
    escapes = ["../escaped.txt", "../../escaped.txt", "/tmp/escaped.txt", "a\x00b.txt",
               "sub/../../escaped.txt"]
    for name in escapes:  # the object exists: only its name is the problem
        f = pipeline.upload_input("innocent.txt", "payload")
        bad.setdefault("unsafe-name", []).append(
            pipeline.fragment([{**f, "name": name}], fragment_id=fid()))
    for reason, body in bad.items():
        for b in body if reason == "unsafe-name" else [body]:
            pipeline.rabbit.publish(pipeline.input_queue, b)
    good.append(pipeline.send_input({"g2.txt": "good two"}))

    sidecar, trans = start_step(pipeline, "passthrough")
    outputs = pipeline.outputs(2)
    letters = dead_letters(pipeline, 3 + len(escapes))
    finish_step(pipeline, sidecar, trans)

    grouped = by_reason(letters)
    assert {r: len(m) for r, m in grouped.items()} == {
        "invalid-fragment-id": 1, "invalid-descriptor": 1, "missing-object": 1,
        "unsafe-name": len(escapes)}
    for messages in grouped.values():
        for m in messages:
            h = m.headers
            assert h["x-iterum-error"] and h["x-iterum-step"] == pipeline.name
            assert h["x-iterum-state"] == "received"
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", h["x-iterum-dead-lettered-at"])
            assert m.properties.delivery_mode == 2
    [missing] = grouped["missing-object"]
    assert missing.body == json.dumps(bad["missing-object"]).encode()  # the original body
    assert "NoSuchKey" in missing.headers["x-iterum-error"]
    assert missing.properties.message_id == bad["missing-object"]["metadata"]["fragment_id"]
    assert sorted(m.json()["metadata"]["fragment_id"] for m in grouped["unsafe-name"]) == \
        sorted(b["metadata"]["fragment_id"] for b in bad["unsafe-name"])

    # the transformation saw the good ones only; the others kept flowing
    ids = sorted(b["metadata"]["fragment_id"] for b in good)
    assert sorted(r["fragment_id"] for r in trans.record()["received"]) == ids
    assert sorted(m.json()["metadata"]["predecessors"][0] for m in outputs) == ids
    # nothing was written outside the volume
    for path in (pipeline.volume.parent / "escaped.txt", tmp_path.parent / "escaped.txt",
                 "/tmp/escaped.txt"):
        assert not os.path.exists(path), path
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_dead_letters_are_listed_and_requeued_after_a_fix(pipeline: Pipeline):
    missing_file = {"name": "late.txt", "path": "iterum_data/late.txt",
                    "bucket": pipeline.input_bucket}
    pipeline.ensure_bucket(pipeline.input_bucket)
    late = pipeline.publish_fragment([missing_file])  # its object is not there yet
    late_id = late["metadata"]["fragment_id"]
    garbage = b'{"files": "not a list"}'
    pipeline.rabbit.publish(pipeline.input_queue, garbage)
    sidecar, trans = start_step(pipeline, "passthrough")
    assert wait_until(lambda: pipeline.rabbit.exists(pipeline.dead_queue)
                      and pipeline.rabbit.ready(pipeline.dead_queue) == 2, timeout=30)

    # list: id, reason, time, attempts; nothing is consumed
    listed = dead_letter_cli(pipeline, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "REASON", "DEAD-LETTERED", "AT"]
    [row] = [ln for ln in lines if ln.startswith(late_id)]
    assert "missing-object" in row and "NoSuchKey" in row
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+1\s", row)
    assert any(ln.startswith("body:") and "invalid-descriptor" in ln for ln in lines)
    assert "2 dead letter(s)" in listed.stderr
    as_json = dead_letter_cli(pipeline, "list", "--json", "--reason", "missing-object")
    [doc] = [json.loads(ln) for ln in as_json.stdout.splitlines()]
    assert (doc["id"], doc["reason"], doc["attempts"]) == (late_id, "missing-object", "1")
    assert json.loads(doc["body"]) == late
    assert queue_counts(pipeline.dead_queue) == (2, 0)

    # an id that is not there: exit 1, and every dead letter stays
    unknown = dead_letter_cli(pipeline, "requeue", "--id", "f" * 64)
    assert unknown.returncode == 1 and "no dead letter with id" in unknown.stderr
    assert queue_counts(pipeline.dead_queue) == (2, 0)

    # the fix: the object appears; requeue that one (by an id prefix)
    pipeline.upload_input("late.txt", "finally here")
    requeued = dead_letter_cli(pipeline, "requeue", "--id", late_id[:12])
    assert requeued.returncode == 0, requeued.stderr
    assert f"requeued {late_id}" in requeued.stdout
    assert "1 left" in requeued.stderr
    [out] = pipeline.outputs(1)
    check_descriptor(pipeline, out, predecessors=[late_id],
                     contents={"out_late.txt": b"finally here"})
    assert queue_counts(pipeline.dead_queue) == (1, 0)

    # requeueing an unfixable one just brings it back: nothing is lost
    again = dead_letter_cli(pipeline, "requeue", "--all", "--reason", "invalid-descriptor")
    assert again.returncode == 0, again.stderr
    [back] = dead_letters(pipeline, 1)
    assert back.body == garbage and back.headers["x-iterum-error-class"] == "invalid-descriptor"
    finish_step(pipeline, sidecar, trans)
    assert [r["fragment_id"] for r in trans.record()["received"]] == [late_id]
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_dead_letter_command_without_a_dead_letter_queue(pipeline: Pipeline):
    listed = dead_letter_cli(pipeline, "list")
    assert listed.returncode == 0
    assert "does not exist" in listed.stderr and listed.stdout == ""


def test_a_descriptor_without_files_is_dead_lettered_and_the_rest_flows(pipeline: Pipeline):
    """`files` missing is an invalid descriptor (the one key §16.12's leniency does not
    cover): dead-lettered with its reason, never handed to the transformation. An explicit
    empty array, or null (a Go peer's zero-file output), is a valid fragment without files."""
    good = [pipeline.send_input({"f1.txt": "before"})]
    without = {"metadata": {"fragment_id": random_id(), "predecessors": []}}
    null = {"files": None, "metadata": {"fragment_id": random_id(), "predecessors": []}}
    empty = pipeline.fragment([])
    for body in (without, null, empty):
        pipeline.rabbit.publish(pipeline.input_queue, body)
    good.append(pipeline.send_input({"f2.txt": "after"}))

    sidecar, trans = start_step(pipeline, "passthrough")
    outputs = pipeline.outputs(2)
    letters = dead_letters(pipeline, 1)
    finish_step(pipeline, sidecar, trans)

    assert [m.body for m in letters] == [json.dumps(without).encode()]
    for m in letters:
        assert m.headers["x-iterum-error-class"] == "invalid-descriptor"
        assert "'files' is missing" in m.headers["x-iterum-error"]
        assert m.headers["x-iterum-state"] == "received"
    received = {r["fragment_id"]: r for r in trans.record()["received"]}
    fids = [b["metadata"]["fragment_id"] for b in good]
    empties = [b["metadata"]["fragment_id"] for b in (null, empty)]
    assert sorted(received) == sorted([*fids, *empties])
    assert [received[f]["files"] for f in empties] == [[], []]  # an empty fragment, as sent
    assert sorted(m.json()["metadata"]["predecessors"][0] for m in outputs) == sorted(fids)
    assert dead_letters(pipeline) == []  # nothing else was dead-lettered
    assert queue_counts(pipeline.input_queue) == (0, 0)
