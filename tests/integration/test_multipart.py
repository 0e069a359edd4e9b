"""The adapter's bounded-memory multipart upload (sidecar/shell/io/multipart.py) against the
harness' S3 (moto with signature checking, or RGW with --s3=rgw): objects byte-identical,
one request per part, a failed part retried alone, a permanent failure aborting the upload.
The adapter runs alone here (no pipeline, no broker). Neither moto nor RGW checks a body
against its signed SHA-256 (docs/s3-servers.md): that the payload hashes are the ones minio
would send is checked in tests/unit/test_storage_adapter.py."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sidecar.core.effects import UploadFile
from sidecar.core.events import FileUploaded, UploadFailed
from sidecar.shell.hooks import NO_HOOKS, StorageHooks
from sidecar.shell.io import minio_private
from sidecar.shell.io.storage import Storage

from .harness import S3Server
from .harness.s3 import without_etag
from .harness.tls import CertificateAuthority, TlsProxy

pytestmark = pytest.mark.s3  # also on RGW (-m s3 --s3=rgw)
MiB = 1 << 20
PART = 5 * MiB  # S3's (and the config's) smallest part


@pytest.fixture
def bucket(s3: S3Server) -> Iterator[str]:
    name = f"multipart-{uuid.uuid4().hex[:16]}"
    s3.harness_client().make_bucket(name)
    yield name
    s3.remove_bucket(name)


def make_adapter(volume: Path, s3: S3Server, bucket: str, hooks: Any = NO_HOOKS,
                 **kw: Any) -> tuple[Storage, list]:
    events: list[Any] = []
    settings = SimpleNamespace(**{
        "data_volume_path": str(volume), "storage_timeout": 10, "minio_url": s3.url,
        "storage_workers": 1, "minio_use_ssl": False, "s3_ca_file": "",
        "minio_access_key": s3.access_key, "minio_secret_key": s3.secret_key,
        "s3_region": s3.region, "part_size": PART, "storage_attempts": 3,
        "storage_backoff_max": 0.05, "minio_output_bucket": bucket,
        "s3_small_objects": "direct", **kw})
    storage = Storage(settings, events.append, hooks)
    storage.transfers.bucket_ready = True  # made above: only the upload's requests are counted
    return storage, events


@pytest.fixture
def adapter(tmp_path: Path, s3: S3Server, bucket: str) -> Iterator[tuple[Storage, list]]:
    storage, events = make_adapter(tmp_path, s3, bucket)
    yield storage, events
    storage.shutdown()


def upload(adapter: tuple[Storage, list], bucket: str, size: int) -> tuple[Any, bytes]:
    storage, events = adapter
    data = os.urandom(size)
    source = Path(storage.volume) / "out" / "big.bin"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(data)
    storage._upload(UploadFile(1, 0, bucket, "frag/big.bin", str(source)))
    return events[-1], data


def stored(s3: S3Server, bucket: str) -> bytes:
    response = s3.harness_client().get_object(bucket, "frag/big.bin")
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def test_a_file_of_several_parts_arrives_byte_identical(adapter, s3: S3Server, bucket: str):
    event, data = upload(adapter, bucket, 2 * PART + 12345)
    assert isinstance(event, FileUploaded), event
    assert (event.size, event.attempts) == (len(data), 1)
    assert event.etag.endswith("-3")
    assert event.sha256 == hashlib.sha256(data).hexdigest()  # hashed with the parts
    assert stored(s3, bucket) == data
    read_back = {"HeadObject": 1} if s3.completes_multipart_without_etag else {}
    assert s3.ops() == {"CreateMultipartUpload": 1, "UploadPart": 3,
                        "CompleteMultipartUpload": 1, **read_back}


def test_a_file_of_one_part_is_one_put(adapter, s3: S3Server, bucket: str):
    event, data = upload(adapter, bucket, PART)
    assert isinstance(event, FileUploaded), event
    assert event.sha256 == hashlib.sha256(data).hexdigest()
    assert stored(s3, bucket) == data
    assert s3.ops() == {"PutObject": 1}


def test_a_transient_failure_retries_that_part_alone(adapter, s3: S3Server, bucket: str):
    s3.fail(times=1, status=503, code="SlowDown",
            match=lambda r: r.op == "UploadPart" and r.query.get("partNumber") == ["2"])
    event, data = upload(adapter, bucket, 2 * PART + 1)
    assert isinstance(event, FileUploaded), event
    assert event.attempts == 2
    assert event.sha256 == hashlib.sha256(data).hexdigest()  # the retried part counted once
    assert stored(s3, bucket) == data
    assert s3.ops()["UploadPart"] == 4 and s3.ops()["CreateMultipartUpload"] == 1


def test_a_permanent_failure_aborts_the_upload(adapter, s3: S3Server, bucket: str):
    s3.fail(times=None, status=403, code="AccessDenied", message="denied",
            match=lambda r: r.op == "UploadPart" and r.query.get("partNumber") == ["2"])
    event, _ = upload(adapter, bucket, 2 * PART + 1)
    assert isinstance(event, UploadFailed), event
    assert (event.reason, event.transient, event.attempts) == ("access-denied", False, 1)
    assert "AccessDenied" in event.error
    assert s3.ops()["AbortMultipartUpload"] == 1
    assert "CompleteMultipartUpload" not in s3.ops()
    assert s3.count("UploadPart") == 2  # part 3 never sent
    assert not list(s3.harness_client().list_objects(bucket, recursive=True))


def test_a_persistent_outage_gives_up_after_the_attempts_and_aborts(adapter, s3: S3Server,
                                                                      bucket: str):
    s3.fail(times=None, status=503, code="SlowDown",
            match=lambda r: r.op == "UploadPart" and r.query.get("partNumber") == ["1"])
    event, _ = upload(adapter, bucket, PART + 1)
    assert isinstance(event, UploadFailed), event
    assert (event.reason, event.transient, event.attempts) == ("storage-unavailable", True, 3)
    assert s3.ops()["UploadPart"] == 3 and s3.ops()["AbortMultipartUpload"] == 1


def test_over_https_parts_carry_a_content_md5_and_arrive_intact(tmp_path: Path, s3: S3Server,
                                                               bucket: str):
    """Over https minio signs UNSIGNED-PAYLOAD and sends a Content-MD5: so do the parts."""
    ca = CertificateAuthority(tmp_path / "pki")
    proxy = TlsProxy(("127.0.0.1", s3.port), ca.issue("s3"))
    (tmp_path / "volume").mkdir()
    storage, events = make_adapter(tmp_path / "volume", s3, bucket, minio_url=proxy.address,
                                   minio_use_ssl=True, s3_ca_file=ca.ca_file)
    try:
        event, data = upload((storage, events), bucket, PART + 7)
    finally:
        storage.shutdown()
        proxy.close()
    assert isinstance(event, FileUploaded), event
    assert stored(s3, bucket) == data
    assert s3.ops()["UploadPart"] == 2 and proxy.handshakes >= 1


# --- an upload answered without an ETag (Ceph RGW, tracker 58879) ---------------------------

class Requests(StorageHooks):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def request(self, operation: str, result: str, seconds: float) -> None:
        self.seen.append((operation, result))


@pytest.mark.parametrize("internals", ["checked", "fallback"])
@pytest.mark.parametrize(("op", "size", "small_objects", "rewrite"), [
    ("CompleteMultipartUpload", 2 * PART + 1, "direct", without_etag),
    ("PutObject", PART, "direct", without_etag),
    ("PutObject", PART, "direct", lambda body, headers: (  # no ETag header at all
        body, [(k, v) for k, v in headers if k.lower() != "etag"])),
    ("PutObject", PART, "minio", without_etag),
])
def test_an_upload_answered_without_an_etag_reads_it_back_with_one_head(
        tmp_path: Path, s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch,
        op: str, size: int, small_objects: str, rewrite: Any, internals: str):
    """Lineage needs the ETag as the object's version: one HeadObject reads it, counted
    in the request metrics like every request."""
    if internals == "fallback":  # as if minio's internals had changed: its public API
        monkeypatch.setattr(minio_private, "_class_problem", lambda: "simulated")
    hooks = Requests()
    storage, events = make_adapter(tmp_path, s3, bucket, hooks, s3_small_objects=small_objects)
    s3.rewrite(rewrite, op=op)
    try:
        event, data = upload((storage, events), bucket, size)
    finally:
        storage.shutdown()
    assert isinstance(event, FileUploaded), event
    assert stored(s3, bucket) == data
    head = s3.harness_client().stat_object(bucket, "frag/big.bin").etag
    assert event.etag == head and head, (event.etag, head)
    assert s3.count("HeadObject") == 1 and ("HeadObject", "200") in hooks.seen
    assert s3.count(op) == 1


def test_an_etag_that_cannot_be_read_back_leaves_the_upload_done_without_a_version(
        tmp_path: Path, s3: S3Server, bucket: str, caplog: pytest.LogCaptureFixture):
    """The object is stored; only its version is unknown: a refused HeadObject (a
    write-only policy) must not fail the upload, or the input would be dead-lettered."""
    storage, events = make_adapter(tmp_path, s3, bucket)
    s3.rewrite(without_etag, op="PutObject")
    s3.fail(times=None, status=403, code="AccessDenied", message="Access Denied",
            op="HeadObject")
    try:
        event, data = upload((storage, events), bucket, PART)
    finally:
        storage.shutdown()
    assert isinstance(event, FileUploaded), event
    assert event.etag == "" and event.sha256 == hashlib.sha256(data).hexdigest()
    assert stored(s3, bucket) == data
    assert s3.count("HeadObject") == 1  # AccessDenied is permanent: not retried
    assert "its ETag could not be read back" in caplog.text
