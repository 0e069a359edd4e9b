"""The one S3 operation classifier (sidecar/shell/io/s3ops.py), shared by the sidecar's
request metrics, the tests' S3 server and the bench's: every operation it names, from a
split request (the servers) and from a URL (the minio client's pool)."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from sidecar.shell.io.s3ops import MULTIPART, of_url, operation

# (method, path, query, operation): path-style, as the test and bench servers see them
REQUESTS = [
    ("GET", "", "", "ListBuckets"),
    ("POST", "", "", "ServicePost"),
    ("GET", "b", "location=", "GetBucketLocation"),
    ("GET", "b", "uploads=", "ListMultipartUploads"),
    ("GET", "b", "uploads", "ListMultipartUploads"),
    ("POST", "b", "delete=", "DeleteObjects"),
    ("POST", "b", "", "BucketPost"),
    ("HEAD", "b", "", "HeadBucket"),
    ("PUT", "b", "", "CreateBucket"),
    ("DELETE", "b", "", "DeleteBucket"),
    ("GET", "b", "", "ListObjects"),
    ("GET", "b", "list-type=2&prefix=a", "ListObjects"),
    ("PATCH", "b", "", "BucketPatch"),
    ("POST", "b/k", "uploads=", "CreateMultipartUpload"),
    ("PUT", "b/k", "partNumber=1&uploadId=x", "UploadPart"),
    ("POST", "b/k", "uploadId=x", "CompleteMultipartUpload"),
    ("DELETE", "b/k", "uploadId=x", "AbortMultipartUpload"),
    ("GET", "b/k", "uploadId=x", "ListParts"),
    ("HEAD", "b/k", "uploadId=x", "Multipart"),
    ("GET", "b/iterum_data/a/b.txt", "", "GetObject"),
    ("HEAD", "b/k", "", "HeadObject"),
    ("PUT", "b/iterum_data/b.txt", "", "PutObject"),
    ("DELETE", "b/k", "", "DeleteObject"),
    ("POST", "b/k", "", "ObjectPost"),
]


@pytest.mark.parametrize(("method", "path", "query", "name"), REQUESTS)
def test_a_split_request_is_named(method: str, path: str, query: str, name: str) -> None:
    bucket, _, key = path.partition("/")
    assert operation(method, bucket, key, parse_qs(query, keep_blank_values=True)) == name


@pytest.mark.parametrize(("method", "path", "query", "name"), REQUESTS)
def test_a_path_style_url_is_named_the_same(method: str, path: str, query: str,
                                            name: str) -> None:
    url = f"http://s3:9000/{path}" + (f"?{query}" if query else "")
    assert of_url(method, url, "s3:9000") == name


@pytest.mark.parametrize(("method", "url", "name"), [
    ("GET", "https://bucket.s3.amazonaws.com/iterum_data/a.txt", "GetObject"),
    ("PUT", "https://bucket.s3.amazonaws.com/a.txt?partNumber=2&uploadId=u", "UploadPart"),
    ("HEAD", "https://bucket.s3.amazonaws.com/", "HeadBucket"),
    ("GET", "https://bucket.s3.amazonaws.com/?location=", "GetBucketLocation"),
])
def test_a_virtual_host_url_names_the_bucket_by_its_host(method: str, url: str,
                                                         name: str) -> None:
    assert of_url(method, url, "s3:9000") == name


def test_the_multipart_operations_are_those_named() -> None:
    named = {name for *_, name in REQUESTS}
    expected = {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
                "AbortMultipartUpload", "ListParts", "ListMultipartUploads"}
    assert named >= expected and expected == MULTIPART



# --- the pool's connections: a small body goes with its header block ------------------


class _Socket:
    """Records what a connection sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def settimeout(self, timeout: object) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _sent(body: object, https: bool = False) -> list[bytes]:
    from sidecar.shell.io.s3ops import CountingPoolManager

    manager = CountingPoolManager("127.0.0.1:9", lambda *a: None)
    pool = manager.connection_from_host("127.0.0.1", 9, "https" if https else "http")
    conn = pool.ConnectionCls("127.0.0.1", 9)
    conn.sock = _Socket()
    conn.request("PUT", "/b/k", body=body, headers={"content-type": "text/plain"})
    return conn.sock.sent


@pytest.mark.parametrize("https", [False, True])
def test_a_small_body_is_sent_with_its_header_block_in_one_send(https: bool) -> None:
    sent = _sent(b"x" * 1024, https)
    assert len(sent) == 1
    head, _, body = sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"PUT /b/k HTTP/1.1\r\n") and b"\r\nContent-Length: 1024" in head
    assert body == b"x" * 1024


def test_a_large_body_or_a_stream_is_sent_after_the_header_block_as_before() -> None:
    from sidecar.shell.io.s3ops import ONE_SEND_MAX

    large = b"y" * (ONE_SEND_MAX + 1)
    sent = _sent(large)
    assert len(sent) == 2 and sent[0].endswith(b"\r\n\r\n") and sent[1] == large
    streamed = _sent(iter([b"a", b"b"]))  # chunked: the header block, then each chunk
    assert streamed[0].endswith(b"\r\n\r\n") and b"".join(streamed[1:]).endswith(b"0\r\n\r\n")


def test_a_request_without_a_body_is_one_send_and_nothing_stays_held() -> None:
    sent = _sent(None)
    assert len(sent) == 1 and sent[0].endswith(b"\r\n\r\n")
    assert _sent(b"") == sent  # an empty body: nothing to join
