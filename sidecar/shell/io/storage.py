"""S3/MinIO transfers on a bounded worker pool, retried with tenacity.

Workers never touch the core: each transfer ends by posting one event back to the loop.
The loop stages the transfers an event asks for and hands them over once it has performed
them all (``flush``): one work item per fragment, not one queue put (and worker wake-up)
per file. Deletions (``DeleteFiles``) run on the same pool, one at a time and in order; a
transfer handed over after a deletion starts only once that deletion is done.
Request economy (§ issue "S3 economy"): one GET per input file (``get_object`` streamed
to disk, not ``fget_object``, which sends a HEAD first), one PUT per output file below the
part size, the output bucket checked once per process, and a fixed region so the client
never asks for a bucket's location. An upload whose answer carries no ETag (Ceph RGW's
CompleteMultipartUpload, tracker 58879) has it read back with one HEAD.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import mimetypes
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

import minio
import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import MIN_PART_SIZE
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_random_exponential,
)

from ...core.effects import DeleteFiles, DownloadFile, UploadFile
from ...core.events import DownloadFailed, Event, Fatal, FileDownloaded, FileUploaded, UploadFailed
from .. import tls
from ..fsmodes import DATA_DIR, DATA_FILE, create_file, make_dirs
from ..hooks import NO_HOOKS, StorageHooks
from . import integrity, minio_private, multipart

log = logging.getLogger("sidecar.storage")
CHUNK = 1 << 20
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                    "OperationAborted", "XMinioServerNotInitialized", "503 SlowDown"}
_PERMANENT_CODES = {"NoSuchKey": "missing-object", "NoSuchBucket": "missing-bucket",
                    "AccessDenied": "access-denied", "InvalidObjectName": "invalid-key",
                    "InvalidAccessKeyId": "bad-credentials",
                    "SignatureDoesNotMatch": "bad-credentials"}


class UnsafePath(Exception):
    """An output path that resolves (through symlinks) outside the data volume."""


def classify(err: BaseException) -> tuple[str, bool]:
    """(reason code, transient?) of a failed transfer."""
    if tls.is_untrusted_certificate(err):
        return "tls-untrusted", False  # a configuration problem: see _misconfigured()
    if isinstance(err, integrity.IntegrityError):
        return "integrity", True  # retried; dead-lettered once retries are spent (_download)
    if isinstance(err, S3Error):
        if err.code in _PERMANENT_CODES:
            return _PERMANENT_CODES[err.code], False
        status = err.response.status if err.response is not None else 0
        return "storage-unavailable", err.code in _TRANSIENT_CODES or status >= 500
    if isinstance(err, ServerError | InvalidResponseError | urllib3.exceptions.HTTPError):
        return "storage-unavailable", True
    if isinstance(err, UnsafePath):
        return "unsafe-path", False
    if isinstance(err, FileNotFoundError):
        return "missing-file", False
    if isinstance(err, OSError):
        if err.errno == errno.ENOSPC:
            return "volume-full", True
        # socket-level failures are OSErrors too (reset, refused, timeout)
        return ("storage-unavailable", True) if err.errno in _NET_ERRNOS else ("local-io", False)
    return "unexpected-error", False


_NET_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
               errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH, None}


def is_transient(err: BaseException) -> bool:
    return classify(err)[1]


def s3_operation(method: str, url: str, endpoint: str) -> str:
    """The S3 API name of a request minio sends (path-style to ``endpoint``, else
    virtual-host style), e.g. GetObject, PutObject, UploadPart, HeadBucket."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    path = parts.path.lstrip("/")
    key = path.partition("/")[2] if parts.netloc == endpoint else path
    bucket = path.partition("/")[0] if parts.netloc == endpoint else parts.netloc
    if not bucket:
        return "ListBuckets"
    if not key:
        if "location" in query:
            return "GetBucketLocation"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket",
                "GET": "ListObjects"}.get(method, "Bucket" + method.title())
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if "uploadId" in query:
        return {"PUT": "UploadPart", "POST": "CompleteMultipartUpload",
                "DELETE": "AbortMultipartUpload", "GET": "ListParts"}.get(method, "Multipart")
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject",
            "DELETE": "DeleteObject"}.get(method, "Object" + method.title())


class CountingPoolManager(urllib3.PoolManager):
    """The minio client's HTTP pool: reports every request by S3 operation and result."""

    def __init__(self, endpoint: str, report: Callable[[str, str, float], None],
                 **kw: Any):
        super().__init__(**kw)
        self.endpoint = endpoint
        self.report = report

    def urlopen(self, method: str, url: str, redirect: bool = True,  # type: ignore[override]
                **kw: Any) -> Any:
        operation = s3_operation(method, url, self.endpoint)
        started = time.monotonic()
        try:
            response = super().urlopen(method, url, redirect=redirect, **kw)
        except BaseException:
            self.report(operation, "error", time.monotonic() - started)
            raise
        self.report(operation, str(response.status), time.monotonic() - started)
        return response


Calls = deque[tuple[Callable[..., None], tuple]]


class WorkerPool:
    """A fixed number of daemon threads running transfers.

    Daemon, unlike ThreadPoolExecutor's (joined at interpreter exit): a transfer still
    hanging on S3 when the sidecar exits is abandoned, not waited for; the core has given
    its input back to the broker by then (docs/reliability.md, SIGTERM).

    A work item is a list of calls (a fragment's transfers): one queue put and one worker
    woken for all of them. The worker makes them in order, unless workers are idle: then
    it puts the rest back for one of them to share (a fragment of large files is not
    transferred one file at a time while the pool has nothing else to do)."""

    def __init__(self, size: int, name: str):
        self._tasks: queue.SimpleQueue[Calls | None] = queue.SimpleQueue()
        self._closed = False
        self._idle = 0  # workers waiting for a task: read without the lock, as a hint
        self._idle_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.submit_all([(fn, args)])

    def submit_all(self, calls: list[tuple[Callable[..., None], tuple]]) -> None:
        """One work item (one queue put, one worker woken) that makes these calls in order."""
        if not self._closed and calls:
            self._tasks.put(deque(calls))

    def shutdown(self) -> None:
        """Queued tasks are dropped; running ones end on their own, or with the process."""
        self._closed = True
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            with self._idle_lock:
                self._idle += 1
            task = self._tasks.get()
            with self._idle_lock:
                self._idle -= 1
            if task is None:
                return
            self._run(task)

    def _run(self, calls: Calls) -> None:
        while not self._closed:
            try:
                fn, args = calls.popleft()  # shared with the workers it was handed to
            except IndexError:
                return
            if calls and self._idle:
                self._tasks.put(calls)
            try:
                fn(*args)
            except Exception:  # the transfer functions post their own failures
                log.exception("storage worker: unexpected error")


class Storage:
    def __init__(self, settings: Any, post: Callable[[Event], None],
                 hooks: StorageHooks = NO_HOOKS):
        self.s = settings
        self.post = post
        self.hooks = hooks  # metrics and readiness (sidecar/shell/metrics.py)
        self.volume = os.path.realpath(settings.data_volume_path)
        timeout = urllib3.Timeout(connect=settings.storage_timeout, read=settings.storage_timeout)
        http = CountingPoolManager(
            settings.minio_url, lambda op, result, secs: self.hooks.request(op, result, secs),
            maxsize=settings.storage_workers + 2, timeout=timeout,
            retries=False,  # tenacity owns the retries
            blocksize=CHUNK,  # streamed parts (multipart.py) are sent 1 MiB a write, not 16 KiB
            **tls.s3_pool_options(settings.minio_use_ssl, settings.s3_ca_file))
        self.client, problem = minio_private.make_client(
            settings.minio_url, access_key=settings.minio_access_key,
            secret_key=settings.minio_secret_key, secure=settings.minio_use_ssl,
            region=settings.s3_region, http_client=http)
        # minio's private internals as expected: the lean paths (s3direct.py, multipart.py)
        self.streamed = problem is None
        if problem is not None:
            log.warning("minio %s: its private internals are not as expected (%s); S3 "
                        "transfers use its public API only (slower; a multipart upload "
                        "holds two parts in memory)", minio.__version__, problem)
        self.part_size = max(settings.part_size, MIN_PART_SIZE)
        # GETs and single PUTs on minio's pool without its per-request work (fix 11)
        self.direct = None
        if self.streamed and settings.s3_small_objects == "direct":
            from .s3direct import DirectS3  # imported only when selected

            self.direct = DirectS3(self.client, http.report)
        self.pool = WorkerPool(settings.storage_workers, "storage")
        self.deletions = DeletionLane(self.pool.submit)
        # Transfers asked for by the event being handled, by fragment, until flush().
        self._staged: dict[tuple[str, int], list[tuple[Callable[..., None], tuple]]] = {}
        self.closing = threading.Event()  # set at exit: no more retries, no late renames
        self._bucket_lock = threading.Lock()
        self._bucket_ready = False
        self._report_lock = threading.Lock()
        self._fatal_reported = False
        self._retrying = Retrying(
            stop=stop_after_attempt(settings.storage_attempts) | stop_when_event_set(
                self.closing),
            wait=wait_random_exponential(multiplier=0.25, max=settings.storage_backoff_max),
            retry=retry_if_exception(is_transient), reraise=True,
            before_sleep=self._before_sleep)

    def shutdown(self) -> None:
        self.closing.set()
        self.pool.shutdown()
        self.deletions.run_until()  # queued deletions are not dropped: the volume ends clean

    def flush(self) -> None:
        """On the loop, after an event's effects: hand over the staged transfers, one work
        item per fragment and direction, its files in the order the core asked for them."""
        for calls in self._staged.values():
            self.pool.submit_all(calls)
        self._staged.clear()

    def _stage(self, key: tuple[str, int], fn: Callable[..., None], e: Any) -> None:
        after = self.deletions.last  # deletions asked for before this transfer
        self._staged.setdefault(key, []).append((self._after_deletions, (after, fn, e)))

    def _after_deletions(self, after: int, fn: Callable[[Any], None], e: Any) -> None:
        self.deletions.run_until(after)  # e.g. a redelivered input's stale file, same path
        fn(e)

    def delete(self, e: DeleteFiles) -> None:
        # On the loop thread, at once: a deletion queued for the pool is lost by a SIGKILL
        # while the journal already records it done, leaving files on the volume
        # (test_crash_restart). The lane stays for a journal-aware version (fix 9).
        self.deletions.add(e)
        self.deletions.run_until()

    # --- downloads -------------------------------------------------------------------

    def download(self, e: DownloadFile, fragment: str = "") -> None:
        self._stage(("download", e.input_id), functools.partial(self._download,
                                                                fragment=fragment), e)

    def _download(self, e: DownloadFile, fragment: str = "") -> None:
        tries = Tries(self._retrying, self._retry_log("download", e.bucket, e.key, fragment))
        try:
            size, etag, sha256 = tries(self._get, e.bucket, e.key, e.dest)
        except Exception as err:  # every failure becomes an event, never a dead worker
            reason, transient = classify(err)
            if reason == "integrity" and not self.closing.is_set():
                # retried, and S3 still serves bytes that are not the object: requeueing
                # would only loop, so dead-letter it (docs/reliability.md)
                transient = False
            transient = self._misconfigured(err) or transient
            self.post(DownloadFailed(e.input_id, e.index, reason, _describe(err), transient,
                                     tries.count))
        else:
            self.post(FileDownloaded(e.input_id, e.index, size, tries.count, etag, sha256))

    def _get(self, bucket: str, key: str, dest: str) -> tuple[int, str, str]:
        """Stream one object to ``dest``, checked (integrity.py); return its size, its
        ETag and its SHA-256. A body that fails the check never gets the name ``dest``."""
        partial = dest + ".part"
        started = time.monotonic()
        try:
            response = (self.direct.get(bucket, key) if self.direct
                        else self.client.get_object(bucket, key))
            try:
                check = integrity.DownloadCheck(response.headers)
                with os.fdopen(_create_in_dirs(partial), "wb") as out:
                    sha256 = check.copy(response, out, CHUNK)
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

    def upload(self, e: UploadFile, fragment: str = "") -> None:
        self._stage(("upload", e.output_id), functools.partial(self._upload,
                                                              fragment=fragment), e)

    def _upload(self, e: UploadFile, fragment: str = "") -> None:
        retry_log = self._retry_log("upload", e.bucket, e.key, fragment)
        tries = Tries(self._retrying, retry_log)
        try:
            self._ensure_output_bucket(retry_log)
            size, etag, sha256 = self._put(e.bucket, e.key, e.source, tries)
        except Exception as err:
            reason, transient = classify(err)
            transient = self._misconfigured(err) or transient
            self.post(UploadFailed(e.output_id, e.index, reason, _describe(err), transient,
                                   tries.count))
        else:
            self.post(FileUploaded(e.output_id, e.index, size, tries.count, etag, sha256))

    def _put(self, bucket: str, key: str, source: str,
             tries: Tries | None = None) -> tuple[int, str, str]:
        """Upload one file; return its size, the ETag S3 gave the object and the SHA-256
        of the bytes sent (hashed as they are read). Retried per request (``tries``, by
        default the adapter's policy): the whole PUT, or each request of a multipart
        upload."""
        tries = tries or Tries(self._retrying)
        with os.fdopen(self._open_source(source), "rb") as data:
            size = os.fstat(data.fileno()).st_size
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            if size <= self.part_size or not self.streamed:
                etag, sha256 = tries(self._put_whole, bucket, key, data, size, content_type)
            else:
                whole = integrity.RunningSha256()
                etag = self._put_parts(bucket, key, data.fileno(), size, content_type, tries,
                                       whole)
                sha256 = whole.hexdigest()
        return size, etag or self._read_back_etag(bucket, key, tries), sha256

    def _put_whole(self, bucket: str, key: str, data: BinaryIO, size: int,
                   content_type: str) -> tuple[str, str]:
        """One PutObject attempt of a file up to the part size (of any size without the
        streamed multipart upload: minio's own, retried whole); its ETag and SHA-256."""
        started = time.monotonic()
        try:
            data.seek(0)  # a retry sends the file again from its start
            reader = integrity.HashingReader(data)
            if self.direct:  # the lean path (s3direct.py): the file is at most a part
                body = reader.read(size)
                etag = self.direct.put(bucket, key, body, content_type, reader.hexdigest())
            else:
                etag = self.client.put_object(bucket, key, reader, size,
                                              content_type=content_type,
                                              part_size=self.part_size,
                                              num_parallel_uploads=1).etag
        except BaseException:
            self.hooks.transfer("upload", 0, time.monotonic() - started)
            raise
        self.hooks.transfer("upload", size, time.monotonic() - started)
        return (etag or "").strip('"'), reader.hexdigest()

    def _put_parts(self, bucket: str, key: str, fd: int, size: int, content_type: str,
                   tries: Tries, whole: integrity.RunningSha256 | None = None) -> str:
        """A multipart upload in bounded memory (sidecar/shell/io/multipart.py); its ETag."""
        started = time.monotonic()
        try:
            etag = multipart.upload(self.client, fd, size, bucket, key, self.part_size,
                                    content_type, tries, whole)
        except BaseException:
            self.hooks.transfer("upload", 0, time.monotonic() - started)
            raise
        self.hooks.transfer("upload", size, time.monotonic() - started)
        return etag

    def _read_back_etag(self, bucket: str, key: str, tries: Tries) -> str:
        """The ETag of an object stored without one in the answer, or "" if it cannot be
        read back: the object is in S3 and the ETag only versions it in lineage, so a
        failed HeadObject (a write-only policy, an outage) must not fail the upload."""
        try:
            return tries(self._etag_of, bucket, key)
        except Exception as err:
            log.warning("uploaded %s/%s, but its ETag could not be read back (%s); its "
                        "lineage carries no version", bucket, key, _describe(err))
            return ""

    def _etag_of(self, bucket: str, key: str) -> str:
        """The ETag of an object just uploaded, read back (HeadObject, counted like every
        request) when the upload's answer had none: lineage needs it as the version."""
        return (self.client.stat_object(bucket, key).etag or "").strip('"')

    def _open_source(self, source: str) -> int:
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

    def _ensure_output_bucket(self, before_sleep: Callable[[RetryCallState], None] | None
                              = None) -> None:
        """Checked (and created if missing) once per process, not before every file; a
        retry is logged as one of the upload that asked (``before_sleep``)."""
        with self._bucket_lock:
            if not self._bucket_ready:
                retrying = (self._retrying.copy(before_sleep=before_sleep) if before_sleep
                            else self._retrying.copy())
                retrying(self._make_bucket, self.s.minio_output_bucket)
                self._bucket_ready = True

    def _make_bucket(self, bucket: str) -> None:
        if self.client.bucket_exists(bucket):
            return
        try:
            self.client.make_bucket(bucket)
        except S3Error as err:  # another replica made it first
            if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _misconfigured(self, err: BaseException) -> bool:
        """S3's certificate failed verification, or S3 refused the keys themselves (an
        unknown access key, a signature that does not match the secret): no fragment is to
        blame, and every transfer would fail the same way. End the run (exit 1, inputs
        given back) with one clear line rather than dead-letter every input. The transfer's
        own failure event follows, marked transient, so its input is requeued, never
        dead-lettered. (AccessDenied is not among them: it may be one bucket's policy, and
        is the fragment's failure; some servers also answer it to a wrong secret.)"""
        if tls.is_untrusted_certificate(err):
            hint = ("set SIDECAR_S3_CA_FILE to the CA bundle that signed it" if not
                    self.s.s3_ca_file else
                    f"SIDECAR_S3_CA_FILE={self.s.s3_ca_file} did not sign it")
            fatal = Fatal("storage-tls", f"S3 at {self.s.minio_url}: the server's TLS "
                          f"certificate is not trusted ({_describe(err)}); {hint}")
        elif classify(err)[0] == "bad-credentials":
            fatal = Fatal("storage-credentials", f"S3 at {self.s.minio_url} refused the "
                          f"credentials ({_describe(err)}); check MINIO_ACCESS_KEY and "
                          "MINIO_SECRET_KEY (or their _FILE variants)")
        else:
            return False
        with self._report_lock:
            reported, self._fatal_reported = self._fatal_reported, True
        if not reported:  # once is enough: every transfer in flight fails the same way
            self.post(fatal)
        return True

    def _before_sleep(self, state: RetryCallState, what: str = "", fragment: str = ""
                      ) -> None:
        err = state.outcome.exception() if state.outcome else None
        detail = _describe(err) if err else "?"
        log.warning("S3 attempt %d failed (%s); retrying%s", state.attempt_number, detail,
                    what, extra={"error": detail, "fragment": fragment})
        self.hooks.retry(_RETRIED.get(getattr(state.fn, "__name__", ""), "other"))

    def _retry_log(self, transfer: str, bucket: str, key: str, fragment: str
                   ) -> Callable[[RetryCallState], None]:
        """The retry hook of one transfer: its lines name the object and the fragment."""
        what = f" the {transfer} of {bucket}/{key}, fragment {fragment or '?'}"
        return lambda state: self._before_sleep(state, what, fragment)

    # --- config files (§16.3) ----------------------------------------------------------

    def fetch_config_files(self) -> None:
        make_dirs(self.s.config_dir, DATA_DIR)  # pyterum asserts that it exists
        for name in sorted(set(self.s.config_files.values())):
            self.pool.submit(self._fetch_config, name)

    def _fetch_config(self, name: str) -> None:
        """The fragmenter uploads config files, maybe after we start: wait for them."""
        retrying = Retrying(
            stop=stop_after_delay(self.s.config_file_timeout),
            wait=wait_random_exponential(multiplier=0.5, max=10),
            retry=retry_if_exception(lambda err: is_transient(err) or classify(err)[0] in (
                "missing-object", "missing-bucket")),
            reraise=True)
        key = f"iterum_config/{name}"
        try:
            retrying(self._get, self.s.config_bucket, key, os.path.join(self.s.config_dir, name))
        except Exception as err:
            if self._misconfigured(err):
                return
            self.post(Fatal("config-file", f"config file {self.s.config_bucket}/{key} could not "
                            f"be fetched: {_describe(err)}"))
        else:
            log.info("config file %s ready in %s", name, self.s.config_dir)


class DeletionLane:
    """DeleteFiles off the loop thread, on the storage pool, one at a time and in order.

    Numbered as they are added; ``run_until(n)`` returns once deletions 1..n are done,
    carrying them out itself if no worker has yet (so a transfer never waits on a queued
    work item, and a full pool cannot deadlock). At most one drain is queued at a time."""

    def __init__(self, submit: Callable[..., None]):
        self._submit = submit
        self._pending: deque[tuple[int, DeleteFiles]] = deque()
        self._lock = threading.Lock()  # guards _pending, last and _scheduled
        self._serial = threading.Lock()  # held while deleting: one deletion at a time
        self.last = 0  # the number of the last deletion added
        self._done = 0  # the number of the last deletion carried out
        self._scheduled = False

    def add(self, e: DeleteFiles) -> None:
        with self._lock:
            self.last += 1
            self._pending.append((self.last, e))
            if self._scheduled:
                return  # the queued drain will take it
            self._scheduled = True
        self._submit(self.run_until)

    def run_until(self, n: int | None = None) -> None:
        """Carry out the pending deletions up to number ``n`` (None: all, and end the
        drain that was queued)."""
        if n is not None and self._done >= n:
            return  # the common case: nothing to wait for, no lock taken
        with self._serial:
            while True:
                with self._lock:
                    if not self._pending or (n is not None and self._done >= n):
                        if n is None:
                            self._scheduled = False
                        return
                    number, e = self._pending.popleft()
                delete_files(e)
                self._done = number


def delete_files(e: DeleteFiles) -> None:
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


class Tries:
    """Runs requests under a retry policy, entering tenacity only after a transient
    failure: most transfers succeed at once and so skip its per-call set-up (a policy copy
    and a retry state, about 15 µs). The waits, stops, hooks and counts are the policy's,
    as if the first attempt had been tenacity's own. ``count`` is the most attempts any
    request took (a multipart upload makes several requests)."""

    def __init__(self, policy: Retrying,
                 before_sleep: Callable[[RetryCallState], None] | None = None):
        self.policy = policy
        self.before_sleep = before_sleep  # instead of the policy's, e.g. naming the object
        self.count = 1

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:
            first = err
        retrying = (self.policy.copy(before_sleep=self.before_sleep) if self.before_sleep
                    else self.policy.copy())
        try:
            return retrying(_failing_once(fn, first), *args)
        finally:
            self.count = max(self.count, int(retrying.statistics.get("attempt_number", 1)))


def _failing_once(fn: Callable[..., Any], first: BaseException) -> Callable[..., Any]:
    """``fn`` whose first call raises ``first`` again (the attempt already made), so
    tenacity judges it like any other; ``fn``'s name is kept for ``_before_sleep``."""
    pending = [first]

    @functools.wraps(fn)
    def again(*args: Any) -> Any:
        if pending:
            raise pending.pop()
        return fn(*args)
    return again


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


def _describe(err: BaseException) -> str:
    if isinstance(err, S3Error):
        # S3Error.bucket_name and .object_name are new in minio 7.2.19
        where = "/".join(p for p in (getattr(err, "bucket_name", None),
                                     getattr(err, "object_name", None)) if p)
        return f"{err.code}: {err.message}" + (f" ({where})" if where else "")
    return f"{type(err).__name__}: {err}"


_RETRIED = {"_get": "download", "_put_whole": "upload", "_make_bucket": "bucket",
            "create_multipart_upload": "upload", "_upload_part": "upload",
            "complete_multipart_upload": "upload", "_etag_of": "upload"}


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
