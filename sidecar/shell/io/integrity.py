"""End-to-end integrity of transfers: the bytes received are the object S3 described, and
the SHA-256 of every file moved is known (for the journal and OpenLineage).

Everything here runs on the storage worker threads, in the same pass that moves the bytes
(hashlib releases the GIL on large chunks). A download is hashed as it streams to disk:
SHA-256 always, MD5 too when the ETag is the object's MD5. Before the file takes its final
name, its length is checked against Content-Length and its MD5 against the ETag; a
mismatch is an ``IntegrityError``: transient (retried), and once the retries are spent the
input is dead-lettered with the reason ``integrity`` (docs/reliability.md).

An ETag is the object's MD5 only for a plain single-part object: 32 hex digits, no ``-N``
multipart suffix, and not encrypted with SSE-KMS or SSE-C (S3's ETag is not the MD5 then).
A body with a Content-Encoding is decoded by urllib3, so it is not the stored bytes: its
length and MD5 are not checked (its SHA-256, of the file written, is still recorded).
Uploads are hashed as they are read (single PUT) or as each part is hashed for its request
(multipart).
"""

from __future__ import annotations

import hashlib
import http.client
import re
from collections.abc import Mapping
from typing import Any, BinaryIO, Protocol

import urllib3

_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_KMS = ("aws:kms", "aws:kms:dsse")


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


class IntegrityError(Exception):
    """A download whose bytes are not the object S3 described (its length or its MD5)."""

    def __init__(self, check: str, detail: str):
        super().__init__(f"{check} mismatch: {detail}")
        self.check = check  # "length" or "md5"


def plain_md5(etag: str, headers: Mapping[str, str]) -> str | None:
    """The MD5 (lower-case hex) that ``etag`` is, or None if it is not one. ``headers``
    has lower-case names."""
    etag = etag.strip('"')
    if not _MD5.match(etag):  # a multipart "…-N", or a server's own scheme
        return None
    if (headers.get("x-amz-server-side-encryption", "").lower() in _KMS
            or "x-amz-server-side-encryption-customer-algorithm" in headers):
        return None
    return etag.lower()


class DownloadCheck:
    """Hashes one download as it streams and checks it against the response's headers."""

    def __init__(self, response_headers: Mapping[str, str]):
        headers = {k.lower(): v for k, v in response_headers.items()}
        self.etag = headers.get("etag", "").strip('"')
        decoded = headers.get("content-encoding", "identity").lower() not in ("", "identity")
        length = headers.get("content-length", "")
        self.expected = int(length) if length.isdigit() and not decoded else None
        md5 = None if decoded else plain_md5(self.etag, headers)
        self._md5_expected = md5
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._sha256 = hashlib.sha256()
        self.size = 0

    def copy(self, response: Any, out: Writer, chunk: int) -> str:
        """Stream ``response``'s body into ``out``, hashing it; check it; return its
        SHA-256. A body that ends before its Content-Length is an IntegrityError."""
        try:
            for data in response.stream(chunk):
                out.write(data)
                self._sha256.update(data)
                if self._md5 is not None:
                    self._md5.update(data)
                self.size += len(data)
        except (urllib3.exceptions.ProtocolError, http.client.IncompleteRead) as err:
            if not _incomplete(err):
                raise  # a reset or a timeout: the connection's fault, not the body's
            raise IntegrityError("length", f"the body ended after {self.size} bytes of "
                                 f"{self.expected}") from err
        return self.verify()

    def verify(self) -> str:
        if self.expected is not None and self.size != self.expected:
            raise IntegrityError("length", f"received {self.size} bytes, Content-Length "
                                 f"{self.expected}")
        if self._md5 is not None and self._md5.hexdigest() != self._md5_expected:
            raise IntegrityError("md5", f"received bytes with MD5 {self._md5.hexdigest()}, "
                                 f"ETag {self.etag}")
        return self._sha256.hexdigest()


def _incomplete(err: BaseException) -> bool:
    """urllib3 raises IncompleteRead itself or wrapped in ProtocolError("Connection
    broken: IncompleteRead(...)", IncompleteRead)."""
    return isinstance(err, http.client.IncompleteRead) or any(
        isinstance(a, http.client.IncompleteRead) for a in err.args)


class HashingReader:
    """A file read for a single PUT, hashed (SHA-256) as it is read."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self._sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self._sha256.update(data)
        return data

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


class RunningSha256:
    """The SHA-256 of a file sent in parts, in order, where a part may be sent more than
    once (a retried request): each attempt hashes into a copy of the state so far, kept
    (``commit``) only once its part is stored."""

    def __init__(self) -> None:
        self._done = hashlib.sha256()

    def attempt(self) -> Any:
        return self._done.copy()

    def commit(self, state: Any) -> None:
        self._done = state

    def hexdigest(self) -> str:
        return self._done.hexdigest()
