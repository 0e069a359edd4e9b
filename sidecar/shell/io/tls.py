"""TLS for the broker (amqps://) and for S3 (MINIO_USE_SSL), built from the settings.

Only construction lives here: an ``ssl.SSLContext`` for pika from the CA file and the
optional client certificate, the ``URLParameters`` that use it, and the keyword
arguments that make the S3 client's urllib3 pool verify against a custom CA bundle. The
configuration calls the same functions once at start-up, so a missing or malformed PEM
file is a configuration error naming its variable, not a failure at the first connect.
"""

from __future__ import annotations

import ssl
from typing import Any

from pika.connection import SSLOptions, URLParameters


def amqp_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A client context that verifies the broker (against ``ca_file``, else the system's
    CAs) and checks its host name; with ``cert_file`` it presents a client certificate
    (the key from ``key_file``, or from ``cert_file`` itself when that holds both)."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def amqp_parameters(url: str, ca_file: str = "", cert_file: str = "",
                    key_file: str = "") -> URLParameters:
    """pika's parameters for ``url``; for ``amqps://`` with our context (pika's own
    default for amqps knows no custom CA and no client certificate)."""
    params = URLParameters(url)
    if params.ssl_options is not None:
        params.ssl_options = SSLOptions(amqp_context(ca_file, cert_file, key_file),
                                             server_hostname=params.host)
    return params


def s3_pool_options(use_ssl: bool, ca_file: str = "") -> dict[str, Any]:
    """Keyword arguments for the S3 client's ``urllib3.PoolManager``: certificates are
    always verified over HTTPS, against ``ca_file`` when given (else the system's CAs)."""
    if not use_ssl:
        return {}
    options: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
    if ca_file:
        options["ca_certs"] = ca_file
    return options


def check_ca_file(path: str) -> None:
    """Raise ssl.SSLError / OSError if ``path`` is not a readable PEM bundle of CAs."""
    ssl.create_default_context(cafile=path)


def is_untrusted_certificate(err: BaseException | None) -> bool:
    """Does the error (or one it was raised from) say the peer's certificate failed
    verification (unknown CA, expired, wrong host name)? That is a configuration problem:
    retrying cannot fix it."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(err):  # wrapped by urllib3 as text only
            return True
        err = err.__cause__ or err.__context__ or _reason(err)
    return False


def _reason(err: BaseException) -> BaseException | None:
    reason = getattr(err, "reason", None)  # urllib3.MaxRetryError keeps the cause here
    return reason if isinstance(reason, BaseException) else None
