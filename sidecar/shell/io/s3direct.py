"""A lean GET, single PUT, bucket check and bucket creation for S3, beside the minio
client (fix 11 in docs/performance-history.md; without the client: issue 14).

The minio client costs 0.55-0.85 ms of CPU per small request, a good part of it work that
is the same for every request: the SigV4 signing key (four HMACs) recomputed, a URL built,
joined and parsed again, header dicts copied. ``DirectS3`` does only what differs per request: it
signs with a signing key cached per (secret, date, region), builds the canonical request
from the few headers it sends, and hands the path to urllib3's connection pool for the
host. Everything else is what the minio client would use, shared with it or built as it
builds it, without importing ``minio.api`` (a quarter of the start-up): the same
PoolManager (TLS settings, timeouts, pool size), a credential provider (session tokens,
rotation), minio's user agent, its URL builder (path or virtual host, per bucket, computed
once) and its key quoting. Errors become the exceptions minio raises for the same answer
(S3Error from the XML body, InvalidResponseError, urllib3's errors), so ``errors.classify``
and the retries see no difference. Multipart uploads stay with minio.
minio's private pieces come through ``minio_private``, which checked them at start-up
(``direct_problem``); this module is imported only when that check passed and the direct
path is selected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from minio.credentials import Provider
from minio.error import InvalidResponseError, S3Error, ServerError

from . import minio_private as private
from .minio_private import check_object_name, quote

SERVICE = "s3"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
_S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"  # minio.xml's namespace
Report = Callable[[str, str, float], None]


@dataclass(frozen=True)
class Target:
    """Where a bucket's objects are: computed once per bucket, as minio would build it."""

    scheme: str
    host: str
    port: int | None
    netloc: str  # the Host header, as minio sends (and signs) it
    prefix: str  # the path before the quoted key: "/bucket/" or "/" (virtual host)
    region: str


class DirectS3:
    """GetObject (streamed), PutObject (one request) and HeadBucket on minio's pool, with
    its URL builder ``base`` (``minio_private.base_url``) and credential ``provider``
    (None: anonymous), as ``Minio(http_client=http, credentials=provider)`` sends them."""

    def __init__(self, http: urllib3.PoolManager, base: Any, provider: Provider | None,
                 report: Report | None = None):
        self._http = http
        self._base = base
        self._credentials = provider
        self._https = base.is_https
        self._report = report
        self._targets: dict[str, Target] = {}
        self._pools: dict[str, Any] = {}
        self._key: tuple[tuple[str, str, str], bytes] = (("", "", ""), b"")

    # --- requests --------------------------------------------------------------------

    def get(self, bucket: str, key: str) -> urllib3.BaseHTTPResponse:
        """The object's response, its body not read yet (as ``Minio.get_object``): the
        caller streams it, then closes it and releases the connection."""
        target = self._target(bucket)
        check_object_name(key)
        path = target.prefix + quote(key)
        headers = self._signed("GET", target, path, {}, EMPTY_SHA256 if not self._https
                               else UNSIGNED)
        return self._send("GetObject", "GET", target, path, headers, None)

    def put(self, bucket: str, key: str, body: bytes, content_type: str,
            sha256: str = "") -> str:
        """Store ``body`` as the object; return the ETag S3 gave it (without quotes).
        ``sha256``: the body's, if the caller has it (hashed once, not twice)."""
        target = self._target(bucket)
        check_object_name(key)
        path = target.prefix + quote(key)
        extra = {"content-length": str(len(body)), "content-type": content_type}
        if self._https:  # as minio: the payload is not signed, its MD5 guards it
            extra["content-md5"] = base64.b64encode(hashlib.md5(
                body, usedforsecurity=False).digest()).decode()
            payload = UNSIGNED
        else:
            payload = sha256 or hashlib.sha256(body).hexdigest()
        headers = self._signed("PUT", target, path, extra, payload)
        response = self._send("PutObject", "PUT", target, path, headers, body)
        return (response.headers.get("etag") or "").replace('"', "")

    def bucket_exists(self, bucket: str) -> bool:
        """``Minio.bucket_exists``: a HEAD of the bucket; False if S3 answers 404."""
        target = self._target(bucket)
        path = self._base.build(method="HEAD", region=target.region, bucket_name=bucket).path
        headers = self._signed("HEAD", target, path, {}, EMPTY_SHA256 if not self._https
                               else UNSIGNED)
        try:
            self._send("HeadBucket", "HEAD", target, path, headers, None, bucket)
        except S3Error as err:
            if err.code != "NoSuchBucket":
                raise
            return False
        return True

    def make_bucket(self, bucket: str) -> None:
        """``Minio.make_bucket`` with the client's fixed region: a PUT of the bucket (path
        style, as minio sends it even to AWS), its body a CreateBucketConfiguration naming
        the region outside us-east-1."""
        private.check_bucket_name(bucket, self._base.is_aws_host, strict=True)
        region = self._base.region  # fixed, as every target's (_locate)
        url = self._base.build(method="PUT", region=region, bucket_name=bucket)
        target = Target(url.scheme, url.hostname or "", url.port, url.netloc, url.path, region)
        body = None if region == "us-east-1" else (  # BaseURL checked it: no XML escapes
            f'<CreateBucketConfiguration xmlns="{_S3_XMLNS}"><LocationConstraint>{region}'
            "</LocationConstraint></CreateBucketConfiguration>").encode()
        extra = {"content-length": str(len(body))} if body else {}
        if body and (self._https or not self._credentials):  # as minio: an MD5 guards it
            extra["content-md5"] = base64.b64encode(hashlib.md5(
                body, usedforsecurity=False).digest()).decode()
        payload = UNSIGNED if self._https else hashlib.sha256(body or b"").hexdigest()
        headers = self._signed("PUT", target, url.path, extra, payload)
        self._send("CreateBucket", "PUT", target, url.path, headers, body)

    def _send(self, operation: str, method: str, target: Target, path: str,
              headers: dict[str, str], body: bytes | None, bucket: str = ""
              ) -> urllib3.BaseHTTPResponse:
        started = time.monotonic()
        try:
            response = self._pool(target).urlopen(
                method, path, body=body, headers=headers, redirect=False,
                assert_same_host=False, preload_content=method != "GET")  # a GET streams
        except BaseException:
            self._observe(operation, "error", started)
            raise
        self._observe(operation, str(response.status), started)
        if response.status in (200, 204, 206):
            return response
        raise bucket_error(response, bucket, path) if method == "HEAD" else error_of(response)

    def _observe(self, operation: str, result: str, started: float) -> None:
        if self._report is not None:
            self._report(operation, result, time.monotonic() - started)

    # --- signing (AWS Signature Version 4, as minio.signer does it) ---------------------

    def _signed(self, method: str, target: Target, path: str, extra: dict[str, str],
                payload: str) -> dict[str, str]:
        """The request's headers, with its Authorization.

        Every header but the user agent is signed, as minio does; the lower-case names
        are sent as they are (HTTP names are case-insensitive)."""
        creds = self._credentials.retrieve() if self._credentials else None
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", utc_now())
        headers = {"host": target.netloc, "x-amz-content-sha256": payload,
                   "x-amz-date": amz_date, **extra}
        if creds is None:  # anonymous, as minio without credentials
            headers["user-agent"] = private.USER_AGENT
            return headers
        if creds.session_token:
            headers["x-amz-security-token"] = creds.session_token
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join((method, path, "", *(f"{n}:{headers[n]}" for n in names), "",
                               signed, payload))
        scope = f"{amz_date[:8]}/{target.region}/{SERVICE}/aws4_request"
        to_sign = "\n".join(("AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()))
        signature = hmac.new(self._signing_key(creds.secret_key, amz_date[:8], target.region),
                             to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={signature}")
        headers["user-agent"] = private.USER_AGENT
        return headers

    def _signing_key(self, secret: str, day: str, region: str) -> bytes:
        """Four HMACs, the same for every request of a day: computed once a day (or when
        the credentials change). One entry, replaced whole: safe across worker threads."""
        cached, key = self._key
        if cached != (secret, day, region):
            key = signing_key(secret, day, region)
            self._key = ((secret, day, region), key)
        return key

    # --- where requests go -----------------------------------------------------------

    def _target(self, bucket: str) -> Target:
        target = self._targets.get(bucket)
        if target is None:
            target = self._targets[bucket] = self._locate(bucket)
        return target

    def _locate(self, bucket: str) -> Target:
        """Host and path prefix of the bucket's objects, from minio's own URL builder (path
        or virtual-host style, AWS hosts), so both clients address the same place."""
        private.check_bucket_name(bucket, self._base.is_aws_host)
        region = self._base.region  # fixed (direct_problem): minio never asks S3 for it
        url = self._base.build(method="GET", region=region, bucket_name=bucket,
                               object_name="k")
        return Target(url.scheme, url.hostname or "", url.port, url.netloc,
                      url.path[:-1], region)

    def _pool(self, target: Target) -> Any:
        """The PoolManager's pool for the host, looked up again if the manager closed it
        (it keeps a bounded number of pools)."""
        pool = self._pools.get(target.netloc)
        if pool is None or pool.pool is None:
            pool = self._pools[target.netloc] = self._http.connection_from_host(
                target.host, target.port, target.scheme)
        return pool


def utc_now() -> time.struct_time:
    return time.gmtime()  # a function of its own: the tests fix the time here


def signing_key(secret: str, day: str, region: str, service: str = SERVICE) -> bytes:
    key = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def error_of(response: urllib3.BaseHTTPResponse) -> Exception:
    """The exception minio raises for this failed GET or PUT (``Minio._url_open``): an
    S3Error from the XML body, else InvalidResponseError (ServerError for an empty 304).
    The connection goes back to the pool."""
    try:
        data = response.data  # read now unless it was preloaded
    finally:
        response.release_conn()
    content_type = response.headers.get("content-type", "")
    if "application/xml" not in content_type.split(";"):
        if response.status == 304 and not data:
            return ServerError(f"server failed with HTTP status code {response.status}",
                               response.status)
        return InvalidResponseError(response.status, content_type,
                                    data.decode(errors="replace") if data else None)
    if not data:
        return InvalidResponseError(response.status, content_type, None)
    return S3Error.fromxml(response)


#: what ``Minio._url_open`` says of a HEAD's answer without a body (a HEAD has none), by
#: status; 301/307/400 add the region S3 names. (minio's 409 entry unpacks wrongly: it
#: raises a ValueError, mirrored here.)
_HEAD_ERRORS = {301: ("PermanentRedirect", "Moved Permanently"),
                307: ("Redirect", "Temporary redirect"), 400: ("BadRequest", "Bad request"),
                403: ("AccessDenied", "Access denied"),
                404: ("NoSuchBucket", "Bucket does not exist"),
                405: ("MethodNotAllowed",
                      "The specified method is not allowed against this resource"),
                501: ("MethodNotAllowed",
                      "The specified method is not allowed against this resource")}


def bucket_error(response: urllib3.BaseHTTPResponse, bucket: str, path: str) -> Exception:
    """The exception ``Minio.bucket_exists`` meets for this failed HEAD of ``bucket``
    (``Minio._url_open`` with a fixed region: no retried HEAD)."""
    try:
        data = response.data
    finally:
        response.release_conn()
    if data:
        return S3Error.fromxml(response)
    if response.status == 409:
        return ValueError("not enough values to unpack (expected 2, got 1)")
    if response.status not in _HEAD_ERRORS:
        return ServerError(f"server failed with HTTP status code {response.status}",
                           response.status)
    code, message = _HEAD_ERRORS[response.status]
    region = response.headers.get("x-amz-bucket-region")
    if region and response.status in (301, 307, 400):
        message += "; use region " + region
    return S3Error(response=response, code=code, message=message, resource=path,
                   request_id=response.headers.get("x-amz-request-id"),
                   host_id=response.headers.get("x-amz-id-2"), bucket_name=bucket,
                   object_name=None)
