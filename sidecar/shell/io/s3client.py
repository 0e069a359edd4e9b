"""The storage adapter's way to S3: one HTTP pool that counts requests (s3ops.py), the lean
path on it (s3direct.py) when selected, and minio's client, made on first need.

Importing ``minio.api`` costs about a quarter of the sidecar's start-up (issue 14), and a
run whose files are all below the part size never needs the client: its GETs, PUTs and
the output bucket's check and creation go the lean way. Multipart uploads, an ETag read
back and ``SIDECAR_S3_SMALL_OBJECTS=minio`` make the client, once,
on the same pool; minio's private internals are checked then (minio_private.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import urllib3
from minio import __version__ as minio_version

from . import minio_private, tls
from .s3ops import CountingPoolManager

if TYPE_CHECKING:
    from minio.api import Minio

    from .s3direct import DirectS3

log = logging.getLogger("sidecar.storage")
CHUNK = 1 << 20  # the size of a socket write of a streamed part, and of a download's reads
_WARNING = ("minio %s: its private internals are not as expected (%s); S3 transfers use "
            "its public API only (slower; a multipart upload holds two parts in memory)")


def pool(settings: Any, report: Callable[[str, str, float], None]) -> CountingPoolManager:
    """The HTTP pool of every S3 request; it reports each one."""
    timeout = urllib3.Timeout(connect=settings.storage_timeout, read=settings.storage_timeout)
    return CountingPoolManager(
        settings.minio_url, report, maxsize=settings.storage_workers + 2, timeout=timeout,
        retries=False,  # tenacity owns the retries
        blocksize=CHUNK,  # streamed parts (multipart.py) are sent 1 MiB a write, not 16 KiB
        **tls.s3_pool_options(settings.minio_use_ssl, settings.s3_ca_file))


def direct(settings: Any, http: CountingPoolManager) -> DirectS3 | None:
    """The lean path, if selected and minio's pieces it uses are as expected (else a
    warning, and None: minio's client for everything)."""
    # built in either mode: a bad endpoint or region fails at start-up, as Minio() did
    base = minio_private.base_url(settings.minio_url, settings.minio_use_ssl,
                                  settings.s3_region)
    if settings.s3_small_objects != "direct":
        return None
    problem = minio_private.direct_problem(base)
    if problem is not None:
        log.warning(_WARNING, minio_version, problem)
        return None
    from minio.credentials import StaticProvider

    from .s3direct import DirectS3  # imported only when selected

    # as Minio(access_key=, secret_key=) sets its provider: none without an access key
    provider = (StaticProvider(settings.minio_access_key, settings.minio_secret_key)
                if settings.minio_access_key else None)
    return DirectS3(http, base, provider, http.report)


class LazyClient:
    """minio's client on the adapter's pool, made by the first caller of ``get`` (once:
    storage workers call concurrently); ``streamed``: its private internals are as
    expected, so large files go up in bounded memory (multipart.py)."""

    def __init__(self, settings: Any, http: urllib3.PoolManager):
        self._settings = settings
        self._http = http
        self._lock = threading.Lock()
        self._client: Minio | None = None
        self._streamed = False

    def get(self) -> Minio:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client, self._streamed = self._make()
                client = self._client
        return client

    def streamed(self) -> bool:
        self.get()
        return self._streamed

    def give(self, client: Any) -> None:
        """Use ``client`` as it is, its public API only (tests and benches give fakes)."""
        with self._lock:
            self._client, self._streamed = client, False

    def _make(self) -> tuple[Minio, bool]:
        s = self._settings
        client, problem = minio_private.make_client(
            s.minio_url, access_key=s.minio_access_key, secret_key=s.minio_secret_key,
            secure=s.minio_use_ssl, region=s.s3_region, http_client=self._http)
        if problem is not None:
            log.warning(_WARNING, minio_version, problem)
        return client, problem is None
