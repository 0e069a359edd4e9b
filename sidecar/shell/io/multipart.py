"""Multipart upload of a file in bounded memory.

minio's ``put_object`` reads every part into a new ``bytes`` while the previous one is still
referenced: two parts in memory (+32 MiB at the default 16 MiB). Here each part is read
twice from the file, 1 MiB at a time: once to hash it (the signature covers the payload),
once as the request body, streamed with its Content-Length. The second read comes from the
page cache, so the CPU is that of one hashing pass, as before.

Imported with the client, on the first upload above the part size (minio.datatypes is
one of minio's heavier modules). The requests go through minio's own signed path (its
private multipart methods, reached through ``minio_private``, which checked them when the
client was made): the same signing, errors and request counting as every other request.
Only the payload hash is ours, computed the way minio computes it
(``Minio._build_headers``): over plain HTTP the SHA-256 that SigV4 signs; over HTTPS
``UNSIGNED-PAYLOAD`` and a Content-MD5; without credentials a Content-MD5. The ETag
returned is the completion's, which may be empty (Ceph tracker 58879): the adapter then
reads it back (``Transfers.put``, transfers.py).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from minio.datatypes import Part

from . import minio_private as private
from .integrity import RunningSha256

if TYPE_CHECKING:
    from minio.api import Minio

log = logging.getLogger("sidecar.storage")
CHUNK = 1 << 20

#: ``call(fn, *args)``: runs one request, retried on transient failures (the adapter's policy)
Call = Callable[..., Any]


class PartBody(private.Prehashed):
    """One range of an open file as a request body: read ``CHUNK``-sized pieces on demand,
    never held whole. ``headers`` carries its length and its hash, computed beforehand."""

    def __init__(self, fd: int, offset: int, length: int, headers: dict[str, str]):
        self.fd, self.offset, self.length, self.headers = fd, offset, length, headers
        self._position, self._end = offset, offset + length

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._position
        data = os.pread(self.fd, left if size < 0 else min(size, left, CHUNK), self._position)
        if not data and left:  # the file shrank under us: the signed hash no longer holds
            raise OSError(f"file truncated during upload ({left} bytes missing)")
        self._position += len(data)
        return data


def payload_digest(client: Minio) -> str:
    """Which hash minio would send for a body on this client: "sha256" or "md5"."""
    signed = private.credentials(client) is not None
    return "sha256" if signed and not private.is_https(client) else "md5"


def hash_range(fd: int, offset: int, length: int, digest: str,
               also: Any = None) -> dict[str, str]:
    """The Content-Length and payload hash headers of ``length`` bytes of ``fd``; the
    bytes also go to the hash ``also`` (the whole file's SHA-256) in the same pass."""
    hasher = hashlib.new(digest, usedforsecurity=False)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    done = 0
    while done < length:
        n = os.preadv(fd, [view[:min(CHUNK, length - done)]], offset + done)
        if not n:
            raise OSError(f"file truncated during upload ({length - done} bytes missing)")
        hasher.update(view[:n])
        if also is not None:
            also.update(view[:n])
        done += n
    headers = {"Content-Length": str(length)}
    if digest == "sha256":
        headers["x-amz-content-sha256"] = hasher.hexdigest()
    else:
        headers["Content-MD5"] = base64.b64encode(hasher.digest()).decode()
    return headers


def upload(client: Minio, fd: int, size: int, bucket: str, key: str, part_size: int,
           content_type: str, call: Call, whole: RunningSha256 | None = None) -> str:
    """Upload ``size`` bytes of ``fd`` to ``bucket/key`` in parts of ``part_size``; return
    the object's ETag (and feed the bytes sent to ``whole``). Each request goes through
    ``call`` (retried on its own); on any failure the upload is aborted, so S3 keeps no
    orphan parts, and the error is raised."""
    part_size, count = private.get_part_info(size, part_size)
    digest = payload_digest(client)
    upload_id = call(private.create_multipart_upload, client, bucket, key,
                     {"Content-Type": content_type})
    try:
        parts = [Part(number, call(_upload_part, client, fd, bucket, key, upload_id, number,
                                   (number - 1) * part_size,
                                   min(part_size, size - (number - 1) * part_size), digest,
                                   whole))
                 for number in range(1, count + 1)]
        etag = call(private.complete_multipart_upload, client, bucket, key, upload_id, parts)
    except BaseException:
        _abort(client, bucket, key, upload_id)
        raise
    return etag


def _upload_part(client: Minio, fd: int, bucket: str, key: str, upload_id: str, number: int,
                 offset: int, length: int, digest: str,
                 whole: RunningSha256 | None = None) -> str:
    """One UploadPart attempt: hashed anew each time (the file is read, not kept)."""
    state = whole.attempt() if whole is not None else None
    body = PartBody(fd, offset, length, hash_range(fd, offset, length, digest, state))
    etag = private.upload_part(client, bucket, key, body, upload_id, number)
    if whole is not None:
        whole.commit(state)  # the part is stored: its bytes count, once
    return etag


def _abort(client: Minio, bucket: str, key: str, upload_id: str) -> None:
    """Best effort: the upload's own error is the one to report, not the abort's."""
    try:
        private.abort_multipart_upload(client, bucket, key, upload_id)
    except Exception as err:
        log.warning("could not abort multipart upload %s of %s/%s: %s", upload_id, bucket,
                    key, err)
