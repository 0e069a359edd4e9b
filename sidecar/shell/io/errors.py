"""What a failed transfer means: a reason code for its failure event, whether a retry may
help (transient) or not (permanent), and whether no transfer can succeed at all (the
server's certificate or the credentials are refused: ``misconfiguration``)."""

from __future__ import annotations

import errno

import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError

from ...core.events import Fatal
from . import integrity, tls

_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                    "OperationAborted", "XMinioServerNotInitialized", "503 SlowDown"}
_PERMANENT_CODES = {"NoSuchKey": "missing-object", "NoSuchBucket": "missing-bucket",
                    "AccessDenied": "access-denied", "InvalidObjectName": "invalid-key",
                    "InvalidAccessKeyId": "bad-credentials",
                    "SignatureDoesNotMatch": "bad-credentials"}
# socket-level failures are OSErrors too (reset, refused, timeout)
_NET_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
               errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH, None}


class UnsafePath(Exception):
    """An output path that resolves (through symlinks) outside the data volume."""


def classify(err: BaseException) -> tuple[str, bool]:
    """(reason code, transient?) of a failed transfer."""
    if tls.is_untrusted_certificate(err):
        return "tls-untrusted", False  # a configuration problem: see misconfiguration()
    if isinstance(err, integrity.IntegrityError):
        return "integrity", True  # retried; dead-lettered once retries are spent (storage.py)
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
        return ("storage-unavailable", True) if err.errno in _NET_ERRNOS else ("local-io", False)
    return "unexpected-error", False


def signature_refused(err: BaseException) -> bool:
    """S3 refused the request's signature: wrong keys, or (rarely) one object's key that
    the server canonicalises otherwise than the client signed it."""
    return isinstance(err, S3Error) and err.code == "SignatureDoesNotMatch"


def is_transient(err: BaseException) -> bool:
    return classify(err)[1]


def is_missing(err: BaseException) -> bool:
    """The object or its bucket does not exist (yet: a config file is waited for)."""
    return classify(err)[0] in ("missing-object", "missing-bucket")


def describe(err: BaseException) -> str:
    """One line for logs and failure events."""
    if isinstance(err, S3Error):
        # S3Error.bucket_name and .object_name are new in minio 7.2.19
        where = "/".join(p for p in (getattr(err, "bucket_name", None),
                                     getattr(err, "object_name", None)) if p)
        return f"{err.code}: {err.message}" + (f" ({where})" if where else "")
    return f"{type(err).__name__}: {err}"


def misconfiguration(err: BaseException, url: str, ca_file: str) -> Fatal | None:
    """The run's end if ``err`` says no transfer can succeed: S3's certificate failed
    verification, or S3 refused the keys themselves (an unknown access key, a signature
    that does not match the secret). No fragment is to blame, and every transfer would fail
    the same way. (AccessDenied is not among them: it may be one bucket's policy, and is
    the fragment's failure; some servers also answer it to a wrong secret. A refused
    signature whose keys S3 accepts without an object is the object's: the storage
    adapter asks before it calls this.)"""
    if tls.is_untrusted_certificate(err):
        hint = ("set SIDECAR_S3_CA_FILE to the CA bundle that signed it" if not ca_file
                else f"SIDECAR_S3_CA_FILE={ca_file} did not sign it")
        return Fatal("storage-tls", f"S3 at {url}: the server's TLS certificate is not "
                     f"trusted ({describe(err)}); {hint}")
    if classify(err)[0] == "bad-credentials":
        return Fatal("storage-credentials", f"S3 at {url} refused the credentials "
                     f"({describe(err)}); check MINIO_ACCESS_KEY and MINIO_SECRET_KEY (or "
                     "their _FILE variants)")
    return None
