"""One file between S3 and the data volume: a download, an upload, a deletion.

Request economy (§ issue "S3 economy"): one GET per input file (``get_object`` streamed
to disk, not ``fget_object``, which sends a HEAD first), one PUT per output file below the
part size, the output bucket checked once per process. An upload whose answer carries no
ETag (Ceph RGW's CompleteMultipartUpload, tracker 58879) has it read back with one HEAD.
Every body is checked or hashed on the way (integrity.py). The requests run under the
``Tries`` they are given (retries.py); failures are raised, for storage.py to classify.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mimetypes
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from minio.error import S3Error
from tenacity import RetryCallState, Retrying

from ...core.effects import DeleteFiles
from ..fsmodes import DATA_DIR, DATA_FILE, create_file, make_dirs
from ..hooks import NO_HOOKS, StorageHooks
from . import integrity
from .errors import UnsafePath, describe
from .retries import Tries
from .s3client import CHUNK, LazyClient

if TYPE_CHECKING:
    from minio.api import Minio

    from .s3direct import DirectS3

log = logging.getLogger("sidecar.storage")


class Transfers:
    """The S3 side of the storage adapter, called from its workers. ``lazy``: minio's
    client, made on first need (s3client.py); ``direct``: the lean GET, single PUT and
    bucket check (s3direct.py), or None for minio's own; ``closing`` is set at exit: no
    more retries, no late renames."""

    def __init__(self, lazy: LazyClient, direct: DirectS3 | None, policy: Retrying,
                 volume: str, part_size: int, output_bucket: str, closing: threading.Event,
                 hooks: StorageHooks = NO_HOOKS):
        self.lazy = lazy
        self.direct = direct
        self.policy = policy  # the retry policy of every request (retries.py)
        self.volume = volume  # realpath of the data volume: uploads come from inside it
        self.part_size = part_size
        self.output_bucket = output_bucket
        self.closing = closing
        self.hooks = hooks  # metrics and readiness (sidecar/shell/metrics.py)
        self._bucket_lock = threading.Lock()
        self.bucket_ready = False

    @property
    def client(self) -> Minio:
        """minio's client, made now if no request needed it yet."""
        return self.lazy.get()

    @client.setter
    def client(self, client: Any) -> None:
        self.lazy.give(client)

    # --- downloads -------------------------------------------------------------------

    def get(self, bucket: str, key: str, dest: str) -> tuple[int, str, str]:
        """Stream one object to ``dest``, checked (integrity.py); return its size, its
        ETag and its SHA-256. A body that fails the check never gets the name ``dest``."""
        partial = dest + ".part"
        started = time.monotonic()
        try:
            response = (self.direct.get(bucket, key) if self.direct
                        else self.client.get_object(bucket, key))
            try:
                check = integrity.DownloadCheck(response.headers)
                out = _Sink(_create_in_dirs(partial))
                try:
                    sha256 = check.copy(response, out, CHUNK)
                finally:
                    os.close(out.fd)
                size = check.size
            finally:
                response.close()
                response.release_conn()
            if self.closing.is_set():  # the core gave this input up: leave nothing behind
                raise InterruptedError("the sidecar is exiting")
            os.replace(partial, dest)
        except BaseException:
            _remove(partial)
            self.hooks.transfer("download", 0, time.monotonic() - started)
            raise
        self.hooks.transfer("download", size, time.monotonic() - started)
        return size, check.etag, sha256

    # --- uploads ---------------------------------------------------------------------

    def put(self, bucket: str, key: str, source: str,
            tries: Tries | None = None) -> tuple[int, str, str]:
        """Upload one file; return its size, the ETag S3 gave the object and the SHA-256
        of the bytes sent (hashed as they are read). Retried per request (``tries``, by
        default the policy's): the whole PUT, or each request of a multipart upload."""
        tries = tries or Tries(self.policy)
        fd = self.open_source(source)
        try:
            size = os.fstat(fd).st_size
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            if size <= self.part_size or not self.lazy.streamed():
                etag, sha256 = tries(self.put_whole, bucket, key, fd, size, content_type)
            else:
                whole = integrity.RunningSha256()
                etag = self.put_parts(bucket, key, fd, size, content_type, tries, whole)
                sha256 = whole.hexdigest()
        finally:
            os.close(fd)
        return size, etag or self.read_back_etag(bucket, key, tries), sha256

    def put_whole(self, bucket: str, key: str, fd: int, size: int,
                  content_type: str) -> tuple[str, str]:
        """One PutObject attempt of a file up to the part size (of any size without the
        streamed multipart upload: minio's own, retried whole); its ETag and SHA-256."""
        started = time.monotonic()
        try:
            # read from the start (a retry sends the file again), without io's buffer
            reader = integrity.HashingReader(cast(BinaryIO, _Source(fd)))
            etag: str | None
            if self.direct and size <= self.part_size:  # the lean path (s3direct.py)
                body = reader.read(size)
                etag = self.direct.put(bucket, key, body, content_type, reader.hexdigest())
            else:
                # minio only calls read(n) on it: a file-like object, not a whole BinaryIO
                etag = self.client.put_object(bucket, key, cast(BinaryIO, reader), size,
                                              content_type=content_type,
                                              part_size=self.part_size,
                                              num_parallel_uploads=1).etag
        except BaseException:
            self.hooks.transfer("upload", 0, time.monotonic() - started)
            raise
        self.hooks.transfer("upload", size, time.monotonic() - started)
        return (etag or "").strip('"'), reader.hexdigest()

    def put_parts(self, bucket: str, key: str, fd: int, size: int, content_type: str,
                  tries: Tries, whole: integrity.RunningSha256 | None = None) -> str:
        """A multipart upload in bounded memory (multipart.py); its ETag."""
        from . import multipart  # with the client: only a file above the part size needs it

        started = time.monotonic()
        try:
            etag = multipart.upload(self.client, fd, size, bucket, key, self.part_size,
                                    content_type, tries, whole)
        except BaseException:
            self.hooks.transfer("upload", 0, time.monotonic() - started)
            raise
        self.hooks.transfer("upload", size, time.monotonic() - started)
        return etag

    def read_back_etag(self, bucket: str, key: str, tries: Tries) -> str:
        """The ETag of an object stored without one in the answer, or "" if it cannot be
        read back: the object is in S3 and the ETag only versions it in lineage, so a
        failed HeadObject (a write-only policy, an outage) must not fail the upload."""
        try:
            return tries(self.etag_of, bucket, key)
        except Exception as err:
            log.warning("uploaded %s/%s, but its ETag could not be read back (%s); its "
                        "lineage carries no version", bucket, key, describe(err))
            return ""

    def etag_of(self, bucket: str, key: str) -> str:
        """The ETag of an object just uploaded, read back (HeadObject, counted like every
        request) when the upload's answer had none: lineage needs it as the version."""
        return (self.client.stat_object(bucket, key).etag or "").strip('"')

    def open_source(self, source: str) -> int:
        """Open an output file for reading; refuse one that resolves outside the volume.
        The path checked is the one the kernel opened (/proc/self/fd: one readlink, where
        ``realpath`` costs an lstat per component), so a symlink swapped in after the check
        cannot redirect the read. A symlink as the last component (O_NOFOLLOW refuses it)
        takes the slow path: resolved first, then opened and checked the same way."""
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            fd = os.open(os.path.realpath(source), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            real = _opened_path(fd, source)
            if not real.startswith(self.volume + os.sep):
                raise UnsafePath(f"{source!r} resolves to {real!r}, outside the data volume")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def ensure_output_bucket(self, before_sleep: Callable[[RetryCallState], None] | None
                             = None) -> None:
        """Checked (and created if missing) once per process, not before every file; a
        retry is logged as one of the upload that asked (``before_sleep``)."""
        with self._bucket_lock:
            if not self.bucket_ready:
                retrying = (self.policy.copy(before_sleep=before_sleep) if before_sleep
                            else self.policy.copy())
                retrying(self.make_bucket, self.output_bucket)
                self.bucket_ready = True

    def keys_accepted(self, bucket: str) -> bool:
        """Whether S3 takes the keys for a request that names no object (a HEAD of
        ``bucket``, whatever its answer but a refusal): then a refused signature of an
        object's request is that object's, not the keys'."""
        try:
            (self.direct or self.client).bucket_exists(bucket)
        except Exception:  # refused too, or no answer: the keys stay suspect
            return False
        return True

    def make_bucket(self, bucket: str) -> None:
        s3 = self.direct or self.client
        if s3.bucket_exists(bucket):
            return
        try:
            s3.make_bucket(bucket)
        except S3Error as err:  # another replica made it first
            if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


def delete_files(e: DeleteFiles) -> None:
    """A fragment's files, then its directories if that left them empty."""
    for path in e.paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("could not delete %s: %s", path, err)
    for d in e.dirs:
        try:
            os.rmdir(d)
        except OSError:
            pass  # not empty (shared by another fragment) or already gone


class _Sink:
    """A download's file, written with ``os.write``: no io buffer in between (the body
    comes in chunks of up to 1 MiB) and none of the system calls ``os.fdopen`` makes."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, data: bytes) -> None:
        written = os.write(self.fd, data)
        if written < len(data):  # rare for a file (a signal, a full disk): write the rest
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self.fd, view):]


class _Source:
    """An output file read from its start with ``os.pread``, for one PUT attempt: no io
    buffer, no seek. ``read(n)`` returns n bytes, fewer only at the end of the file."""

    __slots__ = ("fd", "offset")

    def __init__(self, fd: int):
        self.fd = fd
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        chunks: list[bytes] = []
        while size != 0:
            # one read returns at most about 2 GiB (Linux), so a part may take several
            data = os.pread(self.fd, size if 0 < size < _MAX_READ else _MAX_READ,
                            self.offset)
            if not data:
                break
            self.offset += len(data)
            chunks.append(data)
            size = max(size - len(data), 0) if size > 0 else size
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_MAX_READ = 1 << 30


def _opened_path(fd: int, path: str) -> str:
    """The resolved path of the file open as ``fd`` (``realpath`` where /proc is missing)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc (or not readable): the slower walk, with the same answer
        return os.path.realpath(path)


def _create_in_dirs(path: str) -> int:
    """``create_file`` of a download, making its directories only when they are missing:
    one open in the common case, no cache to keep in step with the deletions."""
    try:
        return create_file(path, DATA_FILE)
    except FileNotFoundError:
        make_dirs(os.path.dirname(path), DATA_DIR)
        return create_file(path, DATA_FILE)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)

