"""The storage adapter the loop uses: S3/MinIO transfers on a bounded worker pool.

Workers never touch the core: each transfer ends by posting one event back to the loop.
The loop stages the transfers the events of one loop turn ask for and hands them over at
the end of the turn (``flush``): one work item per fragment, not one queue put (and worker
wake-up) per file. Deletions (``DeleteFiles``) run at once, on the loop thread.

Its parts: the minio client on an HTTP pool that counts requests by S3 operation
(s3ops.py), the transfers themselves (transfers.py), the retry policy (retries.py), what a
failure means (errors.py) and the pool (workers.py). The client has a fixed region, so it
never asks for a bucket's location.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import urllib3
from minio import __version__ as minio_version
from minio.api import Minio
from minio.helpers import MIN_PART_SIZE
from tenacity import RetryCallState

from ...core.effects import DeleteFiles, DownloadFile, UploadFile
from ...core.events import DownloadFailed, Event, Fatal, FileDownloaded, FileUploaded, UploadFailed
from ..fsmodes import DATA_DIR, make_dirs
from ..hooks import NO_HOOKS, StorageHooks
from . import httpheaders, minio_private, tls
from .errors import classify, describe, misconfiguration
from .retries import BeforeSleep, Tries, announce, config_policy, transfer_policy
from .s3ops import CountingPoolManager
from .transfers import CHUNK, Transfers, delete_files
from .workers import Call, WorkerPool

if TYPE_CHECKING:
    from .s3direct import DirectS3

log = logging.getLogger("sidecar.storage")


class Storage:
    """The adapter: stages the transfers the core asks for, hands them to the pool, turns
    each outcome into one event for the loop; deletes at once."""

    def __init__(self, settings: Any, post: Callable[[Event], None],
                 hooks: StorageHooks = NO_HOOKS):
        self.s = settings
        self.post = post
        self.closing = threading.Event()  # set at exit: no more retries, no late renames
        self.hooks = hooks  # metrics and readiness (request/transfer/retry)
        httpheaders.install()  # S3's answers parsed without the email package (issue 14)
        client, http, streamed = _client(settings, hooks.request)
        direct = None
        if streamed and settings.s3_small_objects == "direct":
            from .s3direct import DirectS3  # imported only when selected

            # GETs and single PUTs on minio's pool without its per-request work (fix 11)
            direct = DirectS3(client, http.report)
        policy = transfer_policy(settings.storage_attempts, settings.storage_backoff_max,
                                 self.closing, lambda state: announce(state, hooks))
        self.transfers = Transfers(client, direct, streamed, policy,
                                   os.path.realpath(settings.data_volume_path),
                                   max(settings.part_size, MIN_PART_SIZE),
                                   settings.minio_output_bucket, self.closing, hooks)
        self.pool = WorkerPool(settings.storage_workers, "storage")
        # Transfers asked for in this loop turn, by fragment, until flush().
        self._staged: dict[tuple[str, int], list[Call]] = {}
        self._report_lock = threading.Lock()
        self._fatal_reported = False

    @property
    def volume(self) -> str:
        return self.transfers.volume

    @property
    def direct(self) -> DirectS3 | None:
        return self.transfers.direct

    def shutdown(self) -> None:
        self.closing.set()
        self.pool.shutdown()

    def flush(self) -> None:
        """On the loop, at the end of a turn: hand over the staged transfers, one work item
        per fragment and direction, its files in the order the core asked for them."""
        if self._staged:
            for calls in self._staged.values():
                self.pool.submit_all(calls)
            self._staged.clear()

    def delete(self, e: DeleteFiles) -> None:
        # On the loop thread, at once: a deletion queued for the pool is lost by a SIGKILL
        # while the journal already records it done, leaving files on the volume
        # (test_crash_restart). Done before any later transfer is staged, so a redelivered
        # input's download never meets its stale file.
        delete_files(e)

    # --- downloads -------------------------------------------------------------------

    def download(self, e: DownloadFile, fragment: str = "") -> None:
        self._staged.setdefault(("download", e.input_id), []).append(
            (self._download, (e, fragment)))

    def _download(self, e: DownloadFile, fragment: str = "") -> None:
        tries = Tries(self.transfers.policy,
                      self._retry_log("download", e.bucket, e.key, fragment))
        try:
            size, etag, sha256 = tries(self.transfers.get, e.bucket, e.key, e.dest)
        except Exception as err:  # every failure becomes an event, never a dead worker
            reason, transient = classify(err)
            if reason == "integrity" and not self.closing.is_set():
                # retried, and S3 still serves bytes that are not the object: requeueing
                # would only loop, so dead-letter it (docs/reliability.md)
                transient = False
            transient = self._misconfigured(err) or transient
            self.post(DownloadFailed(e.input_id, e.index, reason, describe(err), transient,
                                     tries.count))
        else:
            self.post(FileDownloaded(e.input_id, e.index, size, tries.count, etag, sha256))

    # --- uploads ---------------------------------------------------------------------

    def upload(self, e: UploadFile, fragment: str = "") -> None:
        self._staged.setdefault(("upload", e.output_id), []).append(
            (self._upload, (e, fragment)))

    def _upload(self, e: UploadFile, fragment: str = "") -> None:
        retry_log = self._retry_log("upload", e.bucket, e.key, fragment)
        tries = Tries(self.transfers.policy, retry_log)
        try:
            self.transfers.ensure_output_bucket(retry_log)
            size, etag, sha256 = self.transfers.put(e.bucket, e.key, e.source, tries)
        except Exception as err:
            reason, transient = classify(err)
            transient = self._misconfigured(err) or transient
            self.post(UploadFailed(e.output_id, e.index, reason, describe(err), transient,
                                   tries.count))
        else:
            self.post(FileUploaded(e.output_id, e.index, size, tries.count, etag, sha256))

    # --- failures --------------------------------------------------------------------

    def _misconfigured(self, err: BaseException) -> bool:
        """No transfer can succeed (errors.misconfiguration): end the run (exit 1, inputs
        given back) with one clear line rather than dead-letter every input. The
        transfer's own failure event follows, marked transient, so its input is requeued,
        never dead-lettered."""
        fatal = misconfiguration(err, self.s.minio_url, self.s.s3_ca_file)
        if fatal is None:
            return False
        with self._report_lock:
            reported, self._fatal_reported = self._fatal_reported, True
        if not reported:  # once is enough: every transfer in flight fails the same way
            self.post(fatal)
        return True

    def _retry_log(self, transfer: str, bucket: str, key: str, fragment: str) -> BeforeSleep:
        """The retry hook of one transfer: its lines name the object and the fragment
        (the text is made only if a retry comes: most transfers succeed at once)."""
        return functools.partial(self._announce, transfer, bucket, key, fragment)

    def _announce(self, transfer: str, bucket: str, key: str, fragment: str,
                  state: RetryCallState) -> None:
        announce(state, self.hooks, f" the {transfer} of {bucket}/{key}, fragment "
                 f"{fragment or '?'}", fragment)

    # --- config files (§16.3) ----------------------------------------------------------

    def fetch_config_files(self) -> None:
        make_dirs(self.s.config_dir, DATA_DIR)  # pyterum asserts that it exists
        for name in sorted(set(self.s.config_files.values())):
            self.pool.submit(self._fetch_config, name)

    def _fetch_config(self, name: str) -> None:
        """The fragmenter uploads config files, maybe after we start: wait for them."""
        key = f"iterum_config/{name}"
        try:
            config_policy(self.s.config_file_timeout)(
                self.transfers.get, self.s.config_bucket, key,
                os.path.join(self.s.config_dir, name))
        except Exception as err:
            if self._misconfigured(err):
                return
            self.post(Fatal("config-file", f"config file {self.s.config_bucket}/{key} could not "
                            f"be fetched: {describe(err)}"))
        else:
            log.info("config file %s ready in %s", name, self.s.config_dir)


def _client(settings: Any, report: Callable[[str, str, float], None]
            ) -> tuple[Minio, CountingPoolManager, bool]:
    """The minio client on its own HTTP pool, which reports every request; and whether
    minio's private internals are as expected (the lean paths: s3direct.py, multipart.py)."""
    timeout = urllib3.Timeout(connect=settings.storage_timeout, read=settings.storage_timeout)
    http = CountingPoolManager(
        settings.minio_url, report, maxsize=settings.storage_workers + 2, timeout=timeout,
        retries=False,  # tenacity owns the retries
        blocksize=CHUNK,  # streamed parts (multipart.py) are sent 1 MiB a write, not 16 KiB
        **tls.s3_pool_options(settings.minio_use_ssl, settings.s3_ca_file))
    client, problem = minio_private.make_client(
        settings.minio_url, access_key=settings.minio_access_key,
        secret_key=settings.minio_secret_key, secure=settings.minio_use_ssl,
        region=settings.s3_region, http_client=http)
    if problem is not None:
        log.warning("minio %s: its private internals are not as expected (%s); S3 "
                    "transfers use its public API only (slower; a multipart upload "
                    "holds two parts in memory)", minio_version, problem)
    return client, http, problem is None
