"""Which S3 operation a request is (GetObject, PutObject, UploadPart, ...), from its method,
bucket, key and query: the one classifier the sidecar's metrics, the tests' S3 server
(tests/integration/harness/s3.py) and the bench's (bench/s3server.py) share, so that they
count the same names. Also the minio client's HTTP pool that reports each request by it,
and whose connections send a small request body in one piece with its header block.

The servers see a request already split (path-style: ``/bucket/key``); the client's pool
sees a URL, path-style to its endpoint or virtual-host style (``bucket.host/key``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

_BUCKET = {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket",
           "GET": "ListObjects"}
_MULTIPART = {"PUT": "UploadPart", "POST": "CompleteMultipartUpload",
              "DELETE": "AbortMultipartUpload", "GET": "ListParts"}
_OBJECT = {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject",
           "DELETE": "DeleteObject"}
#: the operations of a multipart upload (what a test counts as "went multipart")
MULTIPART = frozenset({"CreateMultipartUpload", "ListMultipartUploads", *_MULTIPART.values()})
_NO_QUERY: tuple[str, ...] = ()


def operation(method: str, bucket: str, key: str, query: Container[str]) -> str:
    """The S3 API name of a request; ``query`` holds (at least) its parameter names. A
    request no rule knows is named by its level and method, e.g. ``ObjectPost``."""
    if not bucket:
        return "ListBuckets" if method == "GET" else "Service" + method.title()
    if not key:
        if "location" in query:
            return "GetBucketLocation"
        if "uploads" in query:
            return "ListMultipartUploads"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return _BUCKET.get(method) or "Bucket" + method.title()
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if "uploadId" in query:
        return _MULTIPART.get(method, "Multipart")
    return _OBJECT.get(method) or "Object" + method.title()


def of_url(method: str, url: str, endpoint: str) -> str:
    """The operation of a request the minio client sends: path-style when the URL's host
    is ``endpoint``, else virtual-host style (the bucket is the host)."""
    parts = urlsplit(url)
    path = parts.path.lstrip("/")
    if parts.netloc == endpoint:
        bucket, _, key = path.partition("/")
    else:
        bucket, key = parts.netloc, path
    # only the parameter names matter: no parse_qs (a dict of lists) per request, and
    # nothing at all for the common GetObject/PutObject, which have no query
    query = ({p.partition("=")[0] for p in parts.query.split("&")} if parts.query
             else _NO_QUERY)
    return operation(method, bucket, key, query)


class CountingPoolManager(urllib3.PoolManager):
    """The minio client's HTTP pool: reports every request by S3 operation and result.
    Its connections send a small body with the header block (``OneSend``)."""

    def __init__(self, endpoint: str, report: Callable[[str, str, float], None],
                 **kw: Any):
        super().__init__(**kw)
        self.endpoint = endpoint
        self.report = report
        self.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def urlopen(self, method: str, url: str, redirect: bool = True,  # type: ignore[override]
                **kw: Any) -> Any:
        operation = of_url(method, url, self.endpoint)
        started = time.monotonic()
        try:
            response = super().urlopen(method, url, redirect=redirect, **kw)
        except BaseException:
            self.report(operation, "error", time.monotonic() - started)
            raise
        self.report(operation, str(response.status), time.monotonic() - started)
        return response


#: the largest body sent with its header block (copied once to join them)
ONE_SEND_MAX = 64 << 10


class OneSend:
    """urllib3 sends a request's header block, then its body, with two ``send`` calls: two
    system calls and two TCP segments for a small PUT. Here the first ``send`` of a
    request with a small ``bytes`` body is held and joined to the next one (the body), so
    the bytes on the wire, and their order, are the same whatever http.client does."""

    _held: bytes | None = None
    _holding = False

    def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                **kw: Any) -> None:
        self._holding = isinstance(body, bytes) and 0 < len(body) <= ONE_SEND_MAX
        try:
            super().request(method, url, body, headers, **kw)  # type: ignore[misc]
            if self._held is not None:  # nothing followed it: sent as it was
                super().send(self._held)  # type: ignore[misc]
        finally:  # after a failure urllib3 drops the connection, and what was held
            self._holding, self._held = False, None

    def send(self, data: Any) -> None:
        if self._holding:
            if self._held is None:
                self._held = data
                return
            data, self._held, self._holding = self._held + data, None, False
        super().send(data)  # type: ignore[misc]


class _HTTPConnection(OneSend, HTTPConnection):
    pass


class _HTTPSConnection(OneSend, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection
