"""The storage adapter the loop uses: S3/MinIO transfers on a bounded worker pool.

Workers never touch the core: each transfer ends by posting one event back to the loop.
The loop stages the transfers the events of one loop turn ask for and hands them over at
the end of the turn (``flush``): one work item per fragment, not one queue put (and worker
wake-up) per file. Deletions (``DeleteFiles``) run at once, on the loop thread.

Its parts: an HTTP pool that counts requests by S3 operation (s3ops.py), the lean GET/PUT
on it and minio's client, made on first need (s3client.py), the transfers themselves
(transfers.py), the retry policy (retries.py), what a failure means (errors.py) and the
pool (workers.py). The region is fixed, so neither asks for a bucket's location.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from minio.helpers import MIN_PART_SIZE
from tenacity import RetryCallState

from ...core.effects import DeleteFiles, DownloadFile, UploadFile
from ...core.events import DownloadFailed, Event, Fatal, FileDownloaded, FileUploaded, UploadFailed
from ..fsmodes import DATA_DIR, make_dirs
from ..hooks import NO_HOOKS, StorageHooks
from . import httpheaders, s3client
from .errors import classify, describe, misconfiguration, signature_refused
from .retries import BeforeSleep, Tries, announce, config_policy, transfer_policy
from .transfers import Transfers, delete_files
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
        http = s3client.pool(settings, hooks.request)
        # GETs, single PUTs and the bucket check without minio's per-request work (fix 11)
        # nor its client (issue 14), on the pool the client gets when made
        direct = s3client.direct(settings, http)
        policy = transfer_policy(settings.storage_attempts, settings.storage_backoff_max,
                                 self.closing, lambda state: announce(state, hooks))
        self.transfers = Transfers(s3client.LazyClient(settings, http), direct, policy,
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
            reason, transient = self._judged(err, e.bucket, reason, transient)
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
            reason, transient = self._judged(err, e.bucket, *classify(err))
            self.post(UploadFailed(e.output_id, e.index, reason, describe(err), transient,
                                   tries.count))
        else:
            self.post(FileUploaded(e.output_id, e.index, size, tries.count, etag, sha256))

    # --- failures --------------------------------------------------------------------

    def _judged(self, err: BaseException, bucket: str, reason: str, transient: bool
                ) -> tuple[str, bool]:
        """The failure's reason and whether it is transient, once misconfiguration is
        ruled out or reported. A refused signature whose keys S3 accepts for the bucket is
        the object's (a key the server signs otherwise): a permanent failure of its
        fragment, which is dead-lettered, not the end of the run (and of every restart)."""
        if signature_refused(err) and self.transfers.keys_accepted(bucket):
            log.warning("S3 refused the signature of a request for an object in %s but "
                        "accepts the keys for the bucket: the object's key is at fault "
                        "(%s)", bucket, describe(err))
            return "signature-refused", False
        return reason, self._misconfigured(err) or transient

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

