"""The storage adapter's own logic, without S3: retries entered only after a failure, the
upload source check, directories made on demand, and the bounded-memory multipart upload
(its hashing, its streamed body, its memory). tests/integration/test_multipart.py runs the
multipart upload against moto."""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import stat
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from minio.error import S3Error
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_none

from sidecar.core.effects import DownloadFile, UploadFile
from sidecar.shell.fsmodes import DATA_DIR
from sidecar.shell.hooks import NO_HOOKS, NoHooks
from sidecar.shell.io import minio_private, multipart, transfers
from sidecar.shell.io.errors import UnsafePath, is_transient
from sidecar.shell.io.retries import Tries
from sidecar.shell.io.storage import Storage

MiB = 1 << 20


def settings(volume: Path, **kw: Any) -> Any:
    values = dict(data_volume_path=str(volume), storage_timeout=5, minio_url="127.0.0.1:9",
                  storage_workers=1, minio_use_ssl=False, s3_ca_file="", minio_access_key="a",
                  minio_secret_key="s", s3_region="us-east-1", part_size=5 * MiB,
                  storage_attempts=4, storage_backoff_max=0, minio_output_bucket="out",
                  s3_small_objects="minio")  # the fakes below stand in for minio
    values.update(kw)
    return SimpleNamespace(**values)


def make_adapter(tmp_path: Path, hooks: Any = NO_HOOKS) -> Storage:
    volume = tmp_path / "volume"
    volume.mkdir()
    return Storage(settings(volume), lambda e: None, hooks)


@pytest.fixture
def adapter(tmp_path: Path):
    s = make_adapter(tmp_path)
    yield s
    s.shutdown()


def slow_down() -> S3Error:
    return S3Error(code="SlowDown", message="m", resource="r", request_id="", host_id="",
                   response=SimpleNamespace(status=503, headers={}))  # type: ignore[arg-type]


class Flaky:
    """Fails with the given errors in turn, then answers "ok"."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0
        self.__name__ = "flaky"  # what _before_sleep reads

    def __call__(self, *args: Any) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def policy(attempts: int = 4, slept: list | None = None) -> Retrying:
    return Retrying(stop=stop_after_attempt(attempts), wait=wait_none(), reraise=True,
                    retry=retry_if_exception(is_transient),
                    before_sleep=lambda state: slept.append(state.fn.__name__)
                    if slept is not None else None)


# --- Tries: tenacity only after a failure, with tenacity's counts ----------------------

def test_a_first_success_never_copies_the_policy():
    class NoCopy(Retrying):
        def copy(self, *a: Any, **kw: Any) -> Any:
            raise AssertionError("tenacity entered on a success")
    tries = Tries(NoCopy())
    assert tries(Flaky()) == "ok"
    assert tries.count == 1


@pytest.mark.parametrize("failures", [1, 2, 3])
def test_transient_failures_are_retried_and_counted_as_tenacity_would(failures: int):
    slept: list[str] = []
    fn = Flaky(*[slow_down() for _ in range(failures)])
    tries = Tries(policy(slept=slept))
    assert tries(fn) == "ok"
    plain = Flaky(*[slow_down() for _ in range(failures)])
    reference = policy()
    reference(plain)
    assert (fn.calls, tries.count) == (plain.calls, reference.statistics["attempt_number"])
    assert fn.calls == failures + 1
    assert slept == ["flaky"] * failures  # the before_sleep hook sees every retry


def test_retries_stop_at_the_policys_attempts_and_raise_the_last_error():
    errors = [slow_down() for _ in range(5)]
    fn = Flaky(*errors)
    tries = Tries(policy(attempts=3))
    with pytest.raises(S3Error) as raised:
        tries(fn)
    assert raised.value is errors[2]
    assert (fn.calls, tries.count) == (3, 3)


def test_a_permanent_failure_is_raised_at_once():
    fn = Flaky(FileNotFoundError("gone"))
    tries = Tries(policy())
    with pytest.raises(FileNotFoundError):
        tries(fn)
    assert (fn.calls, tries.count) == (1, 1)


def test_the_count_is_the_most_attempts_of_any_request():
    tries = Tries(policy())
    tries(Flaky(slow_down(), slow_down()))
    tries(Flaky())
    tries(Flaky(slow_down()))
    assert tries.count == 3


def test_the_retry_hook_names_the_operation(tmp_path: Path):
    retried: list[str] = []

    class Retries(NoHooks):  # the other hooks stay no-ops
        def retry(self, operation: str) -> None:
            retried.append(operation)

    adapter = make_adapter(tmp_path, Retries())
    adapter.transfers.policy = adapter.transfers.policy.copy(wait=wait_none())

    def put_whole() -> None:
        raise slow_down()
    with pytest.raises(S3Error):
        Tries(adapter.transfers.policy)(put_whole)
    assert retried == ["upload"] * (adapter.s.storage_attempts - 1)
    adapter.shutdown()


@pytest.mark.parametrize("transfer", ["download", "upload"])
def test_every_retry_line_names_the_bucket_the_key_and_the_fragment(
        adapter: Storage, caplog, transfer: str):
    """S3 is unreachable (nothing listens on the endpoint's port): each retry of the
    transfer, the output bucket's check included, says what it was moving and for whom."""
    posted: list = []
    adapter.post = posted.append
    fragment = "f" * 64
    if transfer == "download":
        bucket, key = "in-b", "iterum_data/x.txt"
        dest = os.path.join(adapter.volume, "in", "x.txt")
        run = functools.partial(adapter._download, DownloadFile(1, 0, bucket, key, dest))
    else:
        bucket, key = "out", f"iterum_data/{fragment}/x.txt"
        source = Path(adapter.volume) / "x.txt"
        source.write_text("x")
        run = functools.partial(adapter._upload, UploadFile(2, 0, bucket, key, str(source)))
    with caplog.at_level(logging.WARNING, "sidecar.storage"):
        run(fragment=fragment)
    [failed] = posted
    assert failed.transient  # given back to the broker after the last attempt
    lines = [r.getMessage() for r in caplog.records if "S3 attempt" in r.getMessage()]
    assert len(lines) == adapter.s.storage_attempts - 1
    for line in lines:
        assert line.endswith(f"the {transfer} of {bucket}/{key}, fragment {fragment}"), line
    assert all(r.fragment == fragment for r in caplog.records)  # a JSON field too


def test_the_hooks_given_at_construction_see_every_request_and_transfer(tmp_path: Path):
    """The metrics are given to the adapter when it is built: the client's counting pool
    and the transfers both report to them (nothing listens on the endpoint)."""
    seen: list[tuple] = []
    adapter = make_adapter(tmp_path, SimpleNamespace(
        request=lambda op, result, secs: seen.append((op, result)),
        transfer=lambda direction, size, secs: seen.append((direction, size))))
    try:
        with pytest.raises(urllib3.exceptions.HTTPError):
            adapter.transfers.get("in-b", "iterum_data/x.txt",
                                  os.path.join(adapter.volume, "x"))
    finally:
        adapter.shutdown()
    assert seen == [("GetObject", "error"), ("download", 0)]


# --- the upload source ------------------------------------------------------------------

def opened(adapter: Storage, path: Path) -> bytes:
    with os.fdopen(adapter.transfers.open_source(str(path)), "rb") as f:
        return f.read()


def test_a_file_in_the_volume_is_opened(adapter: Storage):
    source = Path(adapter.volume) / "frag" / "out.txt"
    source.parent.mkdir()
    source.write_bytes(b"data")
    assert opened(adapter, source) == b"data"


def test_a_symlink_inside_the_volume_is_followed(adapter: Storage):
    target = Path(adapter.volume) / "in.txt"
    target.write_bytes(b"inside")
    link = Path(adapter.volume) / "out.txt"
    link.symlink_to(target)
    assert opened(adapter, link) == b"inside"


def test_a_symlink_out_of_the_volume_is_refused(adapter: Storage, tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s")
    link = Path(adapter.volume) / "out.txt"
    link.symlink_to(secret)
    with pytest.raises(UnsafePath):
        adapter.transfers.open_source(str(link))


def test_a_directory_symlink_out_of_the_volume_is_refused(adapter: Storage, tmp_path: Path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_bytes(b"s")
    (Path(adapter.volume) / "frag").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePath):
        adapter.transfers.open_source(str(Path(adapter.volume) / "frag" / "f"))


def test_without_proc_the_check_falls_back_to_realpath(adapter: Storage, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    readlink = os.readlink

    def no_proc(path: str) -> str:
        if path.startswith("/proc/"):
            raise FileNotFoundError(path)
        return readlink(path)  # realpath's own use
    monkeypatch.setattr(transfers.os, "readlink", no_proc)
    inside = Path(adapter.volume) / "ok.txt"
    inside.write_bytes(b"ok")
    assert opened(adapter, inside) == b"ok"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"s")
    (Path(adapter.volume) / "d").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafePath):
        adapter.transfers.open_source(str(Path(adapter.volume) / "d" / "f"))


# --- download directories ------------------------------------------------------------

def test_missing_directories_are_made_with_the_data_mode(tmp_path: Path):
    path = tmp_path / "a" / "b" / "f.part"
    os.close(transfers._create_in_dirs(str(path)))
    assert path.exists()
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) & 0o777 == DATA_DIR & 0o777


def test_existing_directories_are_not_looked_at(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(transfers, "make_dirs", lambda *a: pytest.fail("make_dirs called"))
    os.close(transfers._create_in_dirs(str(tmp_path / "f.part")))


# --- multipart: hashing and the streamed body ------------------------------------------

@pytest.fixture
def big(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(3 * MiB + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("digest", ["sha256", "md5"])
def test_hash_range_hashes_exactly_the_range(big: tuple[Path, bytes], digest: str):
    path, data = big
    offset, length = 777, 2 * MiB + 5
    with open(path, "rb") as f:
        headers = multipart.hash_range(f.fileno(), offset, length, digest)
    expected = hashlib.new(digest, data[offset:offset + length]).digest()
    assert headers["Content-Length"] == str(length)
    if digest == "sha256":
        assert headers["x-amz-content-sha256"] == expected.hex()
    else:
        assert base64.b64decode(headers["Content-MD5"]) == expected


def test_a_part_body_reads_its_range_in_bounded_pieces(big: tuple[Path, bytes]):
    path, data = big
    with open(path, "rb") as f:
        body = multipart.PartBody(f.fileno(), 100, 2 * MiB + 1, {})
        pieces = list(iter(lambda: body.read(4 * MiB), b""))
    assert b"".join(pieces) == data[100:100 + 2 * MiB + 1]
    assert max(map(len, pieces)) <= multipart.CHUNK


def test_a_file_truncated_under_the_upload_is_an_error(big: tuple[Path, bytes]):
    path, _ = big
    with open(path, "rb") as f:
        body = multipart.PartBody(f.fileno(), 3 * MiB, 2 * MiB, {})
        body.read(MiB)
        with pytest.raises(OSError, match="truncated"):
            body.read(MiB)


@pytest.mark.parametrize("secure, signed, header, value", [
    (False, True, "x-amz-content-sha256", None),  # SigV4 signs the payload's SHA-256
    (True, True, "x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
    (False, False, "Content-MD5", None),
])
def test_the_client_sends_the_precomputed_hash_as_minio_would(
        big: tuple[Path, bytes], secure: bool, signed: bool, header: str, value: str | None):
    path, data = big
    keys = {"access_key": "a", "secret_key": "s"} if signed else {}
    client = minio_private.streaming_class()("127.0.0.1:9", secure=secure, region="us-east-1",
                                             **keys)  # type: ignore[arg-type]
    creds = minio_private.credentials(client)
    digest = multipart.payload_digest(client)
    with open(path, "rb") as f:
        body = multipart.PartBody(f.fileno(), 0, len(data),
                                  multipart.hash_range(f.fileno(), 0, len(data), digest))
        headers, _ = client._build_headers("h", {}, body, creds)
    # what stock minio sends for the same bytes held in memory
    stock, _ = client._build_headers("h", {}, data, creds)
    assert headers[header] == (value or stock[header])
    assert headers["Content-Length"] == stock["Content-Length"] == str(len(data))
    assert headers.get("Content-MD5") == stock.get("Content-MD5")


# --- multipart: requests, abort, memory ---------------------------------------------------

class FakeClient:
    """Records the multipart requests; reads every part body as urllib3 would."""

    def __init__(self, fail_part: int = 0, keep: bool = True):
        self.fail_part, self.keep = fail_part, keep
        self.calls: list[tuple] = []
        self.received: dict[int, bytes] = {}
        self._provider = None
        self._base_url = SimpleNamespace(is_https=False)

    def _create_multipart_upload(self, bucket: str, key: str, headers: dict) -> str:
        self.calls.append(("create", headers["Content-Type"]))
        return "u1"

    def _upload_part(self, bucket: str, key: str, body: Any, headers: Any, upload_id: str,
                     number: int) -> str:
        self.calls.append(("part", number))
        digest = hashlib.md5()
        received = bytearray() if number == 1 and self.keep else None
        while piece := body.read(1 << 14):
            digest.update(piece)
            if received is not None:
                received += piece
        if received is not None:
            self.received[number] = bytes(received)
        assert base64.b64decode(body.headers["Content-MD5"]) == digest.digest()
        if number == self.fail_part:
            raise urllib3.exceptions.ProtocolError("connection reset")
        return f"etag{number}"

    def _complete_multipart_upload(self, bucket: str, key: str, upload_id: str,
                                   parts: list) -> Any:
        self.calls.append(("complete", [(p.part_number, p.etag) for p in parts]))
        return SimpleNamespace(etag='"final-3"')

    def _abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.calls.append(("abort", upload_id))


def once(fn: Any, *args: Any) -> Any:
    return fn(*args)


def test_parts_cover_the_file_in_order(tmp_path: Path):
    path = tmp_path / "f"
    data = os.urandom(12 * MiB + 3)
    path.write_bytes(data)
    client = FakeClient()
    with open(path, "rb") as f:
        etag = multipart.upload(client, f.fileno(), len(data), "b", "k", 5 * MiB,  # type: ignore[arg-type]
                                "text/plain", once)
    assert etag == "final-3"
    assert client.calls == [("create", "text/plain"), ("part", 1), ("part", 2), ("part", 3),
                            ("complete", [(1, "etag1"), (2, "etag2"), (3, "etag3")])]
    assert client.received[1] == data[:5 * MiB]


def test_a_failed_part_aborts_the_upload_and_raises(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(11 * MiB))
    client = FakeClient(fail_part=2)
    with open(path, "rb") as f, pytest.raises(urllib3.exceptions.ProtocolError):
        multipart.upload(client, f.fileno(), 11 * MiB, "b", "k", 5 * MiB,  # type: ignore[arg-type]
                         "x", once)
    assert client.calls[-1] == ("abort", "u1")
    assert ("part", 3) not in client.calls and not any(c[0] == "complete" for c in client.calls)


def test_a_failed_part_is_retried_alone(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(11 * MiB))
    client = FakeClient()
    original = client._upload_part
    failures = [urllib3.exceptions.ProtocolError("reset")]

    def flaky_part(*args: Any) -> str:
        etag = original(*args)
        if args[-1] == 2 and failures:
            raise failures.pop()
        return etag
    client._upload_part = flaky_part  # type: ignore[method-assign]
    tries = Tries(policy())
    with open(path, "rb") as f:
        multipart.upload(client, f.fileno(), 11 * MiB, "b", "k", 5 * MiB, "x",  # type: ignore[arg-type]
                         tries)
    assert [c for c in client.calls if c[0] == "part"] == [
        ("part", 1), ("part", 2), ("part", 2), ("part", 3)]
    assert tries.count == 2 and ("abort", "u1") not in client.calls


def test_memory_stays_near_one_chunk_whatever_the_part_size(tmp_path: Path):
    path = tmp_path / "f"
    with open(path, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(MiB))
    client = FakeClient(keep=False)
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            multipart.upload(client, f.fileno(), 24 * MiB, "b", "k", 8 * MiB,  # type: ignore[arg-type]
                             "x", once)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * MiB, peak  # minio's put_object held two parts: 16 MiB here
