"""S3 request economy: a 1-file→1-file step costs one GET per input file and one PUT per
output file; the output bucket is checked once per process and created once; no
GetBucketLocation and no HEAD on objects (the original did a BucketExists before every
single transfer, §6.1)."""

from __future__ import annotations

from collections import Counter

import pytest

from .harness import Pipeline, S3Server
from .steps import finish_step, start_step

pytestmark = [pytest.mark.integration, pytest.mark.s3]  # also on RGW (-m s3 --s3=rgw)


def _run(pipeline: Pipeline, s3: S3Server, n: int) -> tuple[dict[str, dict], Counter]:
    """Process n one-file fragments with the passthrough in a fresh sidecar process; return
    per input fragment id the requests that concern it, and all requests of the run."""
    s3.reset()
    inputs = [pipeline.send_input({f"econ{i}.dat": f"payload {i}" * 50}) for i in range(n)]
    sidecar, trans = start_step(pipeline, "passthrough")
    outputs = pipeline.outputs(n)
    finish_step(pipeline, sidecar, trans)
    requests = s3.requests()
    per_fragment = {}
    for body in inputs:
        fid = body["metadata"]["fragment_id"]
        [in_file] = body["files"]
        [out] = [m.json() for m in outputs if m.json()["metadata"]["predecessors"] == [fid]]
        [out_file] = out["files"]
        per_fragment[fid[:12]] = {
            "input": Counter(r.op for r in requests
                             if (r.bucket, r.key) == (in_file["bucket"], in_file["path"])),
            "output": Counter(r.op for r in requests
                              if (r.bucket, r.key) == (out_file["bucket"], out_file["path"])),
        }
    return per_fragment, Counter(r.op for r in requests)


def _check(per_fragment: dict[str, dict], ops: Counter, n: int, created: int) -> None:
    report = f"per fragment: {per_fragment}; all requests: {dict(ops)}"
    for counts in per_fragment.values():
        assert counts["input"] == Counter(GetObject=1), report
        assert counts["output"] == Counter(PutObject=1), report
    assert ops == Counter(GetObject=n, PutObject=n, HeadBucket=1,
                          **({"CreateBucket": 1} if created else {})), report
    assert ops["GetBucketLocation"] == 0 and ops["HeadObject"] == 0, report


def test_one_get_per_input_file_one_put_per_output_file(pipeline: Pipeline, s3: S3Server):
    # first process: the output bucket does not exist yet
    per_fragment, ops = _run(pipeline, s3, 5)
    _check(per_fragment, ops, 5, created=1)
    assert s3.count("HeadBucket", bucket=pipeline.output_bucket) == 1
    assert s3.count("CreateBucket", bucket=pipeline.output_bucket) == 1

    # second process, same step: the bucket exists; checked once more, never re-created
    per_fragment, ops = _run(pipeline, s3, 3)
    _check(per_fragment, ops, 3, created=0)
    assert s3.count("HeadBucket", bucket=pipeline.output_bucket) == 1
