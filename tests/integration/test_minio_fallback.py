"""The sidecar end to end on minio's public API only, as when its client's private internals
are not what sidecar/shell/io/minio_private.py expects: one warning line (when the client is
made, for the multipart upload), and every transfer (GETs and single PUTs on the lean path,
which does not use the client, a multipart upload, an ETag read back) still right.

The sidecar process is given a ``sitecustomize`` (on its PYTHONPATH) that changes what the
check expects, as a minio release renaming a parameter would, and makes every private
accessor of the client raise: a transfer that still went through one would fail the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Pipeline, S3Server
from .harness.s3 import without_etag
from .steps import check_descriptor, finish_step, log_lines, start_step

pytestmark = pytest.mark.integration

MiB = 1 << 20
WARNING = "its private internals are not as expected"
SITECUSTOMIZE = '''
from sidecar.shell.io import minio_private as p

p.METHODS["_upload_part"] = (*p.METHODS["_upload_part"][:-1], "part_no")  # a renamed parameter


def poisoned(*args, **kw):
    raise AssertionError("a private minio internal used after the check failed")


for name in ("credentials", "is_https", "get_part_info", "create_multipart_upload",
             "upload_part", "complete_multipart_upload", "abort_multipart_upload"):
    setattr(p, name, poisoned)
'''


def test_with_minios_internals_changed_the_sidecar_runs_on_its_public_api(
        pipeline: Pipeline, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(site))  # the harness appends it to the sidecar's
    contents = {"small.txt": b"small", "big.bin": bytes(range(256)) * (5 * MiB // 256 + 3)}
    body = pipeline.send_input(contents)
    s3.rewrite(without_etag, op="CompleteMultipartUpload")  # as Ceph RGW answers
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "SIDECAR_PART_SIZE": "5MiB", "SIDECAR_S3_SMALL_OBJECTS": "direct"})
    [output] = pipeline.outputs(1)
    finish_step(pipeline, sidecar, trans)

    check_descriptor(pipeline, output, predecessors=[body["metadata"]["fragment_id"]],
                     contents={f"out_{name}": data for name, data in contents.items()})
    assert s3.count("CompleteMultipartUpload") == 1 and s3.count("HeadObject") == 1
    warnings = [line for line in log_lines(sidecar.logs, "WARNING") if "minio" in line]
    assert len(warnings) == 1 and WARNING in warnings[0], warnings
    assert "part_no" in warnings[0]  # says what differs
    assert "AssertionError" not in sidecar.logs
