"""S3/MinIO transfers on a bounded worker pool, retried with tenacity.

Workers never touch the core: each transfer ends by posting one event back to the loop.
Request economy (§ issue "S3 economy"): one GET per input file (``get_object`` streamed
to disk, not ``fget_object``, which sends a HEAD first), one PUT per output file below the
part size, the output bucket checked once per process, and a fixed region so the client
never asks for a bucket's location.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mimetypes
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib3
from minio import Minio
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

from .. import tls
from ..effects import DownloadFile, UploadFile
from ..events import DownloadFailed, Event, Fatal, FileDownloaded, FileUploaded, UploadFailed
from ..fsmodes import DATA_DIR, DATA_FILE, create_file, make_dirs
from .s3direct import DirectS3

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
        return "tls-untrusted", False  # a configuration problem: see untrusted()
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


class StorageHooks:
    """What the adapter reports for metrics and readiness (sidecar/metrics.py replaces
    these no-ops). Called from worker threads: implementations must be thread-safe."""

    def request(self, operation: str, result: str, seconds: float) -> None:
        """One HTTP request to S3: ``result`` is the status code, or "error"."""

    def transfer(self, direction: str, size: int, seconds: float) -> None:
        """One attempt to move a file ("download" or "upload"); size 0 if it failed."""

    def retry(self, operation: str) -> None:
        """A transient failure of "download", "upload" or "bucket" will be retried."""


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


class WorkerPool:
    """A fixed number of daemon threads running transfers.

    Daemon, unlike ThreadPoolExecutor's (joined at interpreter exit): a transfer still
    hanging on S3 when the sidecar exits is abandoned, not waited for; the core has given
    its input back to the broker by then (docs/reliability.md, SIGTERM)."""

    def __init__(self, size: int, name: str):
        self._tasks: queue.SimpleQueue[tuple[Callable[..., None], tuple] | None] = (
            queue.SimpleQueue())
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._closed:
            self._tasks.put((fn, args))

    def shutdown(self) -> None:
        """Queued tasks are dropped; running ones end on their own, or with the process."""
        self._closed = True
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            if self._closed:
                continue
            fn, args = task
            try:
                fn(*args)
            except Exception:  # the transfer functions post their own failures
                log.exception("storage worker: unexpected error")


class Storage:
    def __init__(self, settings: Any, post: Callable[[Event], None]):
        self.s = settings
        self.post = post
        self.hooks = StorageHooks()
        self.volume = os.path.realpath(settings.data_volume_path)
        timeout = urllib3.Timeout(connect=settings.storage_timeout, read=settings.storage_timeout)
        http = CountingPoolManager(
            settings.minio_url, lambda op, result, secs: self.hooks.request(op, result, secs),
            maxsize=settings.storage_workers + 2, timeout=timeout,
            retries=False,  # tenacity owns the retries
            **tls.s3_pool_options(settings.minio_use_ssl, settings.s3_ca_file))
        self.client = Minio(settings.minio_url, access_key=settings.minio_access_key,
                            secret_key=settings.minio_secret_key, secure=settings.minio_use_ssl,
                            region=settings.s3_region, http_client=http)
        self.part_size = max(settings.part_size, MIN_PART_SIZE)
        # GETs and single PUTs on minio's pool without its per-request work (fix 11)
        self.direct = (DirectS3(self.client, http.report)
                       if settings.s3_small_objects == "direct" else None)
        self.pool = WorkerPool(settings.storage_workers, "storage")
        self.closing = threading.Event()  # set at exit: no more retries, no late renames
        self._bucket_lock = threading.Lock()
        self._bucket_ready = False
        self._report_lock = threading.Lock()
        self._tls_reported = False
        self._retrying = Retrying(
            stop=stop_after_attempt(settings.storage_attempts) | stop_when_event_set(
                self.closing),
            wait=wait_random_exponential(multiplier=0.25, max=settings.storage_backoff_max),
            retry=retry_if_exception(is_transient), reraise=True,
            before_sleep=self._before_sleep)

    def shutdown(self) -> None:
        self.closing.set()
        self.pool.shutdown()

    # --- downloads -------------------------------------------------------------------

    def download(self, e: DownloadFile) -> None:
        self.pool.submit(self._download, e)

    def _download(self, e: DownloadFile) -> None:
        retrying = self._retrying.copy()
        try:
            size, etag = retrying(self._get, e.bucket, e.key, e.dest)
        except Exception as err:  # every failure becomes an event, never a dead worker
            reason, transient = classify(err)
            transient = self._untrusted(err) or transient
            self.post(DownloadFailed(e.input_id, e.index, reason, _describe(err), transient,
                                     _attempts(retrying)))
        else:
            self.post(FileDownloaded(e.input_id, e.index, size, _attempts(retrying), etag))

    def _get(self, bucket: str, key: str, dest: str) -> tuple[int, str]:
        """Stream one object to ``dest``; return its size and its ETag."""
        make_dirs(os.path.dirname(dest), DATA_DIR)
        partial = dest + ".part"
        size = 0
        started = time.monotonic()
        try:
            response = (self.direct.get(bucket, key) if self.direct
                        else self.client.get_object(bucket, key))
            try:
                etag = (response.headers.get("ETag") or "").strip('"')
                with os.fdopen(create_file(partial, DATA_FILE), "wb") as out:
                    for chunk in response.stream(CHUNK):
                        out.write(chunk)
                        size += len(chunk)
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
        return size, etag

    # --- uploads ---------------------------------------------------------------------

    def upload(self, e: UploadFile) -> None:
        self.pool.submit(self._upload, e)

    def _upload(self, e: UploadFile) -> None:
        retrying = self._retrying.copy()
        try:
            self._ensure_output_bucket()
            size, etag = retrying(self._put, e.bucket, e.key, e.source)
        except Exception as err:
            reason, transient = classify(err)
            transient = self._untrusted(err) or transient
            self.post(UploadFailed(e.output_id, e.index, reason, _describe(err), transient,
                                   _attempts(retrying)))
        else:
            self.post(FileUploaded(e.output_id, e.index, size, _attempts(retrying), etag))

    def _put(self, bucket: str, key: str, source: str) -> tuple[int, str]:
        """Upload one file; return its size and the ETag S3 gave the object."""
        real = os.path.realpath(source)
        if not real.startswith(self.volume + os.sep):
            raise UnsafePath(f"{source!r} resolves to {real!r}, outside the data volume")
        started = time.monotonic()
        try:
            with open(real, "rb") as data:
                size = os.fstat(data.fileno()).st_size
                content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
                if self.direct and size <= self.part_size:
                    etag = self.direct.put(bucket, key, data.read(size), content_type)
                else:
                    etag = self.client.put_object(bucket, key, data, size,
                                                  content_type=content_type,
                                                  part_size=self.part_size,
                                                  num_parallel_uploads=1).etag
        except BaseException:
            self.hooks.transfer("upload", 0, time.monotonic() - started)
            raise
        self.hooks.transfer("upload", size, time.monotonic() - started)
        return size, (etag or "").strip('"')

    def _ensure_output_bucket(self) -> None:
        """Checked (and created if missing) once per process, not before every file."""
        with self._bucket_lock:
            if not self._bucket_ready:
                self._retrying.copy()(self._make_bucket, self.s.minio_output_bucket)
                self._bucket_ready = True

    def _make_bucket(self, bucket: str) -> None:
        if self.client.bucket_exists(bucket):
            return
        try:
            self.client.make_bucket(bucket)
        except S3Error as err:  # another replica made it first
            if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _untrusted(self, err: BaseException) -> bool:
        """S3's certificate failed verification: no fragment is to blame, and every
        transfer would fail the same way. End the run (exit 1, inputs given back) with one
        clear line rather than dead-letter every input. The transfer's own failure event
        follows, marked transient, so its input is requeued, never dead-lettered."""
        if not tls.is_untrusted_certificate(err):
            return False
        with self._report_lock:
            reported, self._tls_reported = self._tls_reported, True
        if reported:  # once is enough: every transfer in flight fails the same way
            return True
        hint = ("set SIDECAR_S3_CA_FILE to the CA bundle that signed it" if not
                self.s.s3_ca_file else f"SIDECAR_S3_CA_FILE={self.s.s3_ca_file} did not sign it")
        self.post(Fatal("storage-tls", f"S3 at {self.s.minio_url}: the server's TLS "
                        f"certificate is not trusted ({_describe(err)}); {hint}"))
        return True

    def _before_sleep(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        detail = _describe(err) if err else "?"
        log.warning("S3 attempt %d failed (%s); retrying", state.attempt_number, detail,
                    extra={"error": detail})
        self.hooks.retry(_RETRIED.get(getattr(state.fn, "__name__", ""), "other"))

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
            if self._untrusted(err):
                return
            self.post(Fatal("config-file", f"config file {self.s.config_bucket}/{key} could not "
                            f"be fetched: {_describe(err)}"))
        else:
            log.info("config file %s ready in %s", name, self.s.config_dir)


def _attempts(retrying: Retrying) -> int:
    return int(retrying.statistics.get("attempt_number", 1))


def _describe(err: BaseException) -> str:
    if isinstance(err, S3Error):
        where = "/".join(p for p in (err.bucket_name, err.object_name) if p)
        return f"{err.code}: {err.message}" + (f" ({where})" if where else "")
    return f"{type(err).__name__}: {err}"


_RETRIED = {"_get": "download", "_put": "upload", "_make_bucket": "bucket"}


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
