"""sidecar/shell/io/s3client.py: minio's client is made on first need, once (issue 14).

A run whose files fit in one request, in an output bucket that exists, never imports
``minio.api`` (a quarter of the start-up): a fresh interpreter runs the storage adapter's
normal path (config file, downloads, a failed one, a refused one, an upload with its bucket
check, an upload that creates its bucket) against a small fake S3 served by the test, then
an upload whose answer has no ETag, which is read back with the client.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sidecar.shell.io import minio_private, s3client

ROOT = Path(__file__).resolve().parents[2]
BODY = b"the object's bytes"
REFUSED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId</Code>"
           b"<Message>no such key</Message></Error>")
MISSING = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
           b"<Message>The specified key does not exist.</Message></Error>")


class FakeS3(BaseHTTPRequestHandler):
    """Path-style S3, enough for the adapter: buckets ``inputs``, ``cfg`` and ``out`` exist;
    objects ``inputs/k`` and ``cfg/iterum_config/c.json``; ``inputs/refused`` is refused."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []
    buckets = {"inputs", "cfg", "out"}

    def log_message(self, *args: Any) -> None:
        pass

    def answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_one(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        bucket, _, key = self.path.lstrip("/").partition("/")
        xml = "application/xml"
        if not key:  # HeadBucket, CreateBucket
            if self.command == "PUT":
                self.buckets.add(bucket)
            self.answer(200 if bucket in self.buckets else 404)
        elif self.command == "PUT" and key == "no-etag.txt":
            self.answer(200)  # as RGW's CompleteMultipartUpload: read back with a HEAD
        elif self.command == "PUT":
            self.answer(200, ETag=f'"{hashlib.md5(data).hexdigest()}"')
        elif self.command == "HEAD":
            self.answer(200, ETag='"read-back"', **{"Last-Modified":
                                                    "Tue, 08 Dec 2026 03:00:00 GMT"})
        elif key in ("k", "iterum_config/c.json"):
            self.answer(200, BODY, ETag=f'"{hashlib.md5(BODY).hexdigest()}"')
        elif key == "refused":
            self.answer(403, REFUSED, **{"Content-Type": xml})
        else:
            self.answer(404, MISSING, **{"Content-Type": xml})

    do_GET = do_PUT = do_HEAD = handle_one


@pytest.fixture
def fake_s3() -> Iterator[tuple[int, list[str]]]:
    FakeS3.seen = []
    FakeS3.buckets = {"inputs", "cfg", "out"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], FakeS3.seen
    server.shutdown()
    server.server_close()


CHILD = """
import json, os, sys
from types import SimpleNamespace
from sidecar.core.effects import DownloadFile, UploadFile
from sidecar.shell.io.storage import Storage

port, volume = sys.argv[1], sys.argv[2]
settings = SimpleNamespace(
    data_volume_path=volume, storage_timeout=5, minio_url=f"127.0.0.1:{port}",
    storage_workers=1, minio_use_ssl=False, s3_ca_file="", minio_access_key="a",
    minio_secret_key="s", s3_region="us-east-1", part_size=5 << 20, storage_attempts=1,
    storage_backoff_max=0.1, minio_output_bucket="out", s3_small_objects="direct",
    config_dir=os.path.join(volume, "config"), config_bucket="cfg", config_file_timeout=5)
events = []
storage = Storage(settings, events.append)
os.makedirs(settings.config_dir)
storage._fetch_config("c.json")
for n, key in enumerate(("k", "missing", "refused")):
    storage._download(DownloadFile(n, 0, "inputs", key, os.path.join(volume, "in", key)))
source = os.path.join(volume, "out", "f.txt")
os.makedirs(os.path.dirname(source))
open(source, "wb").write(b"output")
storage._upload(UploadFile(1, 0, "out", "f.txt", source))
normal = "minio.api" in sys.modules
storage.transfers.output_bucket, storage.transfers.bucket_ready = "new", False
storage._upload(UploadFile(2, 0, "new", "f.txt", source))  # creates the bucket
created = "minio.api" in sys.modules
storage._upload(UploadFile(3, 0, "new", "no-etag.txt", source))  # read back: the client
print(json.dumps({"normal": normal, "created": created, "after": "minio.api" in sys.modules,
                  "events": [[type(e).__name__, getattr(e, "reason", "")] for e in events]}))
storage.shutdown()
"""


def test_the_normal_path_never_imports_minios_client(fake_s3: tuple[int, list[str]],
                                                     tmp_path: Path) -> None:
    port, seen = fake_s3
    out = subprocess.run([sys.executable, "-c", CHILD, str(port), str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=True,
                         env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)
    result = json.loads(out.stdout)

    assert result["events"] == [
        ["FileDownloaded", ""], ["DownloadFailed", "missing-object"],
        ["Fatal", "storage-credentials"], ["DownloadFailed", "bad-credentials"],  # the run ends
        ["FileUploaded", ""], ["FileUploaded", ""], ["FileUploaded", ""]], out.stderr
    assert result["normal"] is result["created"] is False and result["after"] is True
    assert seen == ["GET /cfg/iterum_config/c.json", "GET /inputs/k", "GET /inputs/missing",
                    "GET /inputs/refused", "HEAD /out", "PUT /out/f.txt",
                    "HEAD /new", "PUT /new", "PUT /new/f.txt", "PUT /new/no-etag.txt",
                    "HEAD /new/no-etag.txt"]
    assert (tmp_path / "config" / "c.json").read_bytes() == BODY
    assert (tmp_path / "in" / "k").read_bytes() == BODY


def settings(**kw: Any) -> SimpleNamespace:
    return SimpleNamespace(**{
        "minio_url": "127.0.0.1:9", "minio_access_key": "a", "minio_secret_key": "s",
        "minio_use_ssl": False, "s3_region": "us-east-1", "s3_small_objects": "direct", **kw})


def test_the_client_is_made_once_by_concurrent_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = minio_private.make_client

    def counted(endpoint: str, **kw: Any) -> Any:
        made.append(endpoint)
        return real(endpoint, **kw)
    monkeypatch.setattr(minio_private, "make_client", counted)
    lazy = s3client.LazyClient(settings(), s3client.urllib3.PoolManager())
    start = threading.Barrier(8)
    clients: list[Any] = []

    def first_use() -> None:
        start.wait()
        clients.append(lazy.get())
    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == ["127.0.0.1:9"] and len({id(c) for c in clients}) == 1
    assert lazy.streamed() is True


def test_a_client_whose_internals_changed_is_used_for_its_public_api_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(minio_private, "_class_problem", lambda: "simulated")
    lazy = s3client.LazyClient(settings(), s3client.urllib3.PoolManager())
    assert not caplog.records  # nothing is checked before the client is needed
    assert lazy.streamed() is False
    assert type(lazy.get()).__name__ == "Minio"
    [record] = caplog.records
    assert "its private internals are not as expected (simulated)" in record.getMessage()


def test_the_lean_path_falls_back_to_the_client_when_its_pieces_changed(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(minio_private, "direct_problem", lambda base: "simulated")
    assert s3client.direct(settings(), s3client.pool(settings(
        storage_timeout=1, storage_workers=1, s3_ca_file=""), print)) is None
    assert "not as expected (simulated)" in caplog.records[0].getMessage()


def test_a_bad_region_still_fails_at_start_up_in_either_mode() -> None:
    for mode in ("direct", "minio"):
        with pytest.raises(ValueError, match="invalid region"):
            s3client.direct(settings(s3_region="not a region!", s3_small_objects=mode),
                            None)  # type: ignore[arg-type]
