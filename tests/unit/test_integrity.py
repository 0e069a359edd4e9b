"""End-to-end integrity, without S3 (sidecar/shell/io/integrity.py and its use by the storage
adapter): which ETags are MD5s, the length and MD5 checks, a body cut short, the retries
then the dead letter, no partial file left, the hashing on a worker thread, and the SHA-256
of what is downloaded and uploaded. tests/integration/test_reliability_integrity.py does
the same against moto with corrupted and truncated GET bodies."""

from __future__ import annotations

import hashlib
import http.client
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from test_storage_adapter import settings

from sidecar.core import codec
from sidecar.core.effects import DownloadFile, UploadFile
from sidecar.core.events import DownloadFailed, FileDownloaded, FileUploaded
from sidecar.shell.io import integrity
from sidecar.shell.io.errors import classify
from sidecar.shell.io.integrity import DownloadCheck, IntegrityError, plain_md5
from sidecar.shell.io.storage import Storage

BODY = b"the object's bytes " * 1000
MD5 = hashlib.md5(BODY).hexdigest()
SHA = hashlib.sha256(BODY).hexdigest()


# --- which ETags are an MD5 -----------------------------------------------------------

@pytest.mark.parametrize("etag, headers, expected", [
    (MD5, {}, MD5),
    (f'"{MD5}"', {}, MD5),  # quoted, as S3 sends it
    (MD5.upper(), {}, MD5),
    (f"{MD5}-3", {}, None),  # multipart: the MD5 of the parts' MD5s
    ("not-an-md5", {}, None),
    (MD5[:31], {}, None),
    (MD5, {"x-amz-server-side-encryption": "aws:kms"}, None),  # opaque under SSE-KMS
    (MD5, {"x-amz-server-side-encryption": "aws:kms:dsse"}, None),
    (MD5, {"x-amz-server-side-encryption-customer-algorithm": "AES256"}, None),  # SSE-C
    (MD5, {"x-amz-server-side-encryption": "AES256"}, MD5),  # SSE-S3: still the MD5
])
def test_only_a_plain_single_part_etag_is_an_md5(etag: str, headers: dict,
                                                 expected: str | None) -> None:
    assert plain_md5(etag, headers) == expected


# --- the check of one response ----------------------------------------------------------

class Response:
    """A urllib3-like streamed response: ``body`` in pieces, then ``error`` if given."""

    def __init__(self, body: bytes, headers: dict[str, str], error: Exception | None = None):
        self.body, self.headers, self.error = body, headers, error
        self.thread: threading.Thread | None = None

    def stream(self, size: int) -> Iterator[bytes]:
        self.thread = threading.current_thread()
        for start in range(0, len(self.body), size):
            yield self.body[start:start + size]
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def headers(etag: str = MD5, length: int = len(BODY), **more: str) -> dict[str, str]:
    return {"ETag": f'"{etag}"', "Content-Length": str(length), **more}


def copied(response: Response) -> tuple[str, bytes]:
    out = io.BytesIO()
    return DownloadCheck(response.headers).copy(response, out, 4096), out.getvalue()


def flipped(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


def test_a_whole_body_passes_and_gives_its_sha256() -> None:
    assert copied(Response(BODY, headers())) == (SHA, BODY)


def test_a_flipped_byte_under_a_plain_etag_is_an_md5_mismatch() -> None:
    with pytest.raises(IntegrityError, match="md5 mismatch") as err:
        copied(Response(flipped(BODY), headers()))
    assert err.value.check == "md5"


def test_a_multipart_etag_is_not_md5_checked() -> None:
    damaged = flipped(BODY)
    sha, _ = copied(Response(damaged, headers(etag=f"{MD5}-2")))
    assert sha == hashlib.sha256(damaged).hexdigest()  # what was received, recorded


def test_an_sse_kms_etag_is_not_md5_checked() -> None:
    damaged = flipped(BODY)
    sha, _ = copied(Response(damaged, headers(**{"x-amz-server-side-encryption": "aws:kms"})))
    assert sha == hashlib.sha256(damaged).hexdigest()


def test_a_body_shorter_than_its_content_length_is_a_length_mismatch() -> None:
    with pytest.raises(IntegrityError, match="length mismatch: received 100 bytes"):
        copied(Response(BODY[:100], headers(etag=f"{MD5}-2")))


def test_a_body_longer_than_its_content_length_is_a_length_mismatch() -> None:
    with pytest.raises(IntegrityError, match="length mismatch"):
        copied(Response(BODY + b"x", headers(etag=f"{MD5}-2")))


@pytest.mark.parametrize("error", [
    urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(...)",
                                     http.client.IncompleteRead(b"x" * 100, 5)),
    urllib3.exceptions.IncompleteRead(100, 5),
])
def test_a_body_the_server_ended_early_is_a_length_mismatch(error: Exception) -> None:
    with pytest.raises(IntegrityError, match="length mismatch: the body ended"):
        copied(Response(BODY[:100], headers(), error))


def test_a_reset_connection_stays_a_connection_error() -> None:
    error = urllib3.exceptions.ProtocolError("Connection broken", ConnectionResetError(104))
    with pytest.raises(urllib3.exceptions.ProtocolError):
        copied(Response(BODY[:100], headers(), error))
    assert classify(error) == ("storage-unavailable", True)


def test_a_decoded_body_is_not_checked_against_the_stored_bytes() -> None:
    sha, _ = copied(Response(b"decoded", headers(length=3, **{"Content-Encoding": "gzip"})))
    assert sha == hashlib.sha256(b"decoded").hexdigest()  # of the file written


def test_without_content_length_or_etag_only_the_sha256_is_taken() -> None:
    assert copied(Response(BODY, {})) == (SHA, BODY)


def test_an_integrity_failure_is_transient() -> None:
    assert classify(IntegrityError("md5", "x")) == ("integrity", True)


# --- the adapter: retried, then dead-lettered; nothing left on the volume --------------

class Client:
    """minio's ``get_object``/``put_object``, answering from ``responses`` in turn."""

    def __init__(self, *responses: Response):
        self.responses = list(responses)
        self.served: list[Response] = []
        self.put: list[bytes] = []

    def get_object(self, bucket: str, key: str) -> Response:
        response = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        self.served.append(response)
        return response

    def put_object(self, bucket: str, key: str, data: Any, length: int, **kw: Any) -> Any:
        self.put.append(data.read(length))
        return SimpleNamespace(etag='"put-etag"')

    def bucket_exists(self, bucket: str) -> bool:
        return True


def adapter(tmp_path: Path, client: Client, **kw: Any) -> tuple[Storage, list]:
    volume = tmp_path / "volume"
    volume.mkdir(exist_ok=True)
    events: list[Any] = []
    storage = Storage(settings(volume, **kw), events.append)
    storage.transfers.client = client  # type: ignore[assignment]
    storage.transfers.policy = storage.transfers.policy.copy(wait=lambda state: 0)
    return storage, events


def download(storage: Storage) -> DownloadFile:
    return DownloadFile(1, 0, "in", "iterum_data/f.bin", f"{storage.volume}/in/f.bin")


def test_a_corrupt_body_once_is_retried_and_recorded_with_its_sha256(tmp_path: Path) -> None:
    storage, events = adapter(tmp_path, Client(Response(flipped(BODY), headers()),
                                               Response(BODY, headers())))
    e = download(storage)
    storage._download(e)
    assert events == [FileDownloaded(1, 0, len(BODY), 2, MD5, SHA)]
    assert Path(e.dest).read_bytes() == BODY
    storage.shutdown()


@pytest.mark.parametrize("response, check", [
    (Response(flipped(BODY), headers()), "md5"),
    (Response(BODY[:100], headers()), "length"),
])
def test_a_body_that_stays_wrong_is_dead_lettered_and_leaves_no_file(
        tmp_path: Path, response: Response, check: str) -> None:
    storage, events = adapter(tmp_path, Client(response))
    e = download(storage)
    storage._download(e)
    [failed] = events
    assert isinstance(failed, DownloadFailed)
    assert (failed.reason, failed.transient, failed.attempts) == ("integrity", False, 4)
    assert f"IntegrityError: {check} mismatch" in failed.error
    assert list(Path(storage.volume).rglob("*.bin*")) == []  # neither the file nor .part
    storage.shutdown()


def test_a_check_cut_short_by_the_exit_gives_the_input_back(tmp_path: Path) -> None:
    storage, events = adapter(tmp_path, Client(Response(flipped(BODY), headers())))
    storage.closing.set()  # the retries stop for the exit: not the object's fault
    storage._download(download(storage))
    [failed] = events
    assert (failed.reason, failed.transient) == ("integrity", True)


def test_the_hashing_runs_on_a_storage_worker_not_the_loop(tmp_path: Path) -> None:
    response = Response(BODY, headers())
    storage, events = adapter(tmp_path, Client(response))
    done = threading.Event()
    storage.post = lambda event: (events.append(event), done.set())  # type: ignore[assignment]
    storage.download(download(storage))
    storage.flush()
    assert done.wait(10)
    assert events[0].sha256 == SHA
    assert response.thread is not None and response.thread.name.startswith("storage-")
    storage.shutdown()


@pytest.mark.parametrize("size", [0, 1000, 5 << 20])  # empty, one PUT, the part size
def test_an_upload_records_the_sha256_of_the_bytes_sent(tmp_path: Path, size: int) -> None:
    client = Client(Response(b"", {}))
    storage, events = adapter(tmp_path, client)
    data = (BODY * (size // len(BODY) + 1))[:size]
    source = Path(storage.volume) / "out.bin"
    source.write_bytes(data)
    storage._upload(UploadFile(1, 0, "out", "k", str(source)))
    assert events == [FileUploaded(1, 0, size, 1, "put-etag", hashlib.sha256(data).hexdigest())]
    assert client.put == [data]
    storage.shutdown()


def test_a_retried_part_counts_once_in_the_running_sha256() -> None:
    running = integrity.RunningSha256()
    first = running.attempt()
    first.update(b"part one")
    running.commit(first)
    failed = running.attempt()
    failed.update(b"part two, sent but refused")  # never committed
    retried = running.attempt()
    retried.update(b"part two")
    running.commit(retried)
    assert running.hexdigest() == hashlib.sha256(b"part onepart two").hexdigest()


# --- the journal: the new field is optional --------------------------------------------

def test_a_journal_line_without_sha256_decodes_with_an_empty_one() -> None:
    old = {"kind": "FileDownloaded", "input_id": 1, "index": 0, "size": 5, "attempts": 1,
           "etag": "e"}
    assert codec.decode(old) == FileDownloaded(1, 0, 5, 1, "e", "")
    new = codec.encode(FileUploaded(1, 0, 5, 1, "e", SHA))
    assert new["sha256"] == SHA and codec.decode(new) == FileUploaded(1, 0, 5, 1, "e", SHA)
