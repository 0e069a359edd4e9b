"""Every use of minio's private internals, in one module, checked before first use.

The lean GET, PUT, bucket check and creation (s3direct.py) sign requests themselves,
with minio's URL builder (``helpers.BaseURL``), key quoting, name checks and user agent,
without a client: ``direct_problem`` checks those at start-up. The bounded-memory multipart upload
(multipart.py) teaches the client to take a pre-hashed body (``_build_headers``) and makes
the multipart requests one at a time: ``make_client`` checks that when the client is made
(on first need: importing ``minio.api`` costs a quarter of the start-up, issue 14). None of
that is minio's public API, and a minio release may rename or change any of it. If a piece
is not there with the shape used here, the storage adapter logs one warning line and uses
minio's public API only (``get_object``, ``put_object``): slower, and a multipart upload
then holds two parts in memory, but it works.
"""

from __future__ import annotations

import functools
import inspect
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import minio
from minio import helpers

if TYPE_CHECKING:  # minio.api is imported only when the client is made
    from minio.api import Minio
    from minio.credentials import Credentials


def _refuse_empty(name: str) -> None:
    if not name:
        raise ValueError("object name cannot be empty")


#: Refuses the object names minio refuses (``check_object_name`` is new in minio 7.2.8;
#: before, ``get_object`` and ``put_object`` only refused an empty name). Looked up without
#: failing, so that a minio without either helper still imports (and the check falls back).
check_object_name: Callable[[str], None] = (
    getattr(helpers, "check_object_name", None)
    or getattr(helpers, "check_non_empty_string", None) or _refuse_empty)

#: The user agent minio's client sends (``Minio._user_agent`` without ``set_app_info``).
USER_AGENT: str = getattr(helpers, "_DEFAULT_USER_AGENT", None) or (
    f"MinIO ({platform.system()}; {platform.machine()}) "
    f"{getattr(minio, '__title__', 'minio')}/{getattr(minio, '__version__', '')}")

#: The parameters each private method must begin with (more are allowed if optional).
METHODS = {
    "_build_headers": ("host", "headers", "body", "creds"),
    "_create_multipart_upload": ("bucket_name", "object_name", "headers"),
    "_upload_part": ("bucket_name", "object_name", "data", "headers", "upload_id",
                     "part_number"),
    "_complete_multipart_upload": ("bucket_name", "object_name", "upload_id", "parts"),
    "_abort_multipart_upload": ("bucket_name", "object_name", "upload_id"),
}
HELPERS = ("quote", "check_bucket_name", "get_part_info")
DIRECT_HELPERS = ("quote", "check_bucket_name", "BaseURL")


def base_url(endpoint: str, secure: bool, region: str) -> Any:
    """minio's URL builder for the endpoint, as ``Minio(endpoint, secure=, region=)`` makes
    it: ``is_https``, ``is_aws_host``, ``region``, ``build(method=, region=, ...)``."""
    return helpers.BaseURL(("https://" if secure else "http://") + endpoint, region)


def direct_problem(base: Any) -> str | None:
    """Why the lean path (s3direct.py) cannot use these minio pieces, or None: a dry run
    of what it uses (no request is sent)."""
    try:
        for name in DIRECT_HELPERS:
            if not callable(getattr(helpers, name, None)):
                return f"minio.helpers.{name} is missing"
        if not isinstance(USER_AGENT, str):
            return "minio.helpers._DEFAULT_USER_AGENT is not a string"
        if not isinstance(base.is_https, bool) or not isinstance(base.is_aws_host, bool):
            return "BaseURL has no is_https/is_aws_host"
        if not isinstance(base.region, str) or not base.region:
            return f"BaseURL.region is {base.region!r}"  # minio would ask S3 per bucket
        url = base.build(method="GET", region="us-east-1", bucket_name="bucket",
                         object_name="k")
        if not (url.path.endswith("/k") and url.netloc and url.scheme):
            return f"BaseURL.build gave {url!r}"
        check_bucket_name("bucket", base.is_aws_host)
        if quote("a b") != "a%20b":
            return f"minio.helpers.quote('a b') gave {quote('a b')!r}"
    except Exception as err:  # any surprise at all: the public API is the safe way
        return f"{type(err).__name__}: {err}".replace("\n", " ")
    return None


class Prehashed:
    """A request body whose length and payload hash are known: ``headers`` has them."""

    headers: dict[str, str]


@functools.cache
def streaming_class() -> type[Minio]:
    """minio's client, taught one thing: a ``Prehashed`` body's headers are taken as they
    are instead of hashing a ``bytes`` body (which it is not). Made on first use, with
    ``minio.api``."""
    from minio.api import Minio

    class StreamingMinio(Minio):
        def _build_headers(self, host: str, headers: dict | None = None, body: Any = None,
                           creds: Any = None) -> tuple[dict, Any]:
            if not isinstance(body, Prehashed):
                return super()._build_headers(host, headers, body, creds)
            headers, date = super()._build_headers(host, headers, None, creds)
            headers.update(body.headers)  # after: minio set the empty body's hash
            return headers, date

    return StreamingMinio


def make_client(endpoint: str, **kw: Any) -> tuple[Minio, str | None]:
    """The adapter's client and, if minio's internals are not what this module expects,
    why (then the client is a plain ``Minio``, for the public API only)."""
    from minio.api import Minio

    problem = _class_problem()
    if problem is None:
        client = streaming_class()(endpoint, **kw)
        problem = _instance_problem(client)
        if problem is None:
            return client, None
    return Minio(endpoint, **kw), problem


def _class_problem() -> str | None:
    from minio.api import Minio

    for name in HELPERS:
        if not callable(getattr(helpers, name, None)):
            return f"minio.helpers.{name} is missing"
    for name, expected in METHODS.items():
        method = getattr(Minio, name, None)
        if not callable(method):
            return f"Minio.{name} is missing"
        problem = _parameters_problem(f"Minio.{name}", method, expected)
        if problem:
            return problem
    return None


def _parameters_problem(name: str, fn: Callable[..., Any], expected: tuple[str, ...]
                        ) -> str | None:
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    names = tuple(p.name for p in params[:len(expected)])
    extra = params[len(expected):]
    if names != expected or any(p.default is p.empty and p.kind not in (
            p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in extra):
        return f"{name}{inspect.signature(fn)}, expected ({', '.join(expected)})"
    return None


def _instance_problem(client: Minio) -> str | None:
    """The attributes, and a dry run of what is used (no request is sent)."""
    try:
        provider = getattr(client, "_provider", None)
        if provider is not None and not callable(getattr(provider, "retrieve", None)):
            return "Minio._provider has no retrieve()"
        if not isinstance(client._base_url.is_https, bool):
            return "Minio._base_url has no is_https"
        probe = Prehashed()
        probe.headers = {"Content-Length": "1", "x-amz-content-sha256": "probe"}
        headers, _ = client._build_headers("h", {}, probe, None)  # type: ignore[arg-type]
        if headers.get("x-amz-content-sha256") != "probe":
            return "Minio._build_headers did not keep a pre-hashed body's headers"
    except Exception as err:  # any surprise at all: the public API is the safe way
        return f"{type(err).__name__}: {err}".replace("\n", " ")
    return None


# --- the accessors: the only reads of minio's private fields ---------------------------

def credentials(client: Minio) -> Credentials | None:
    """The client's current credentials (None: anonymous)."""
    return client._provider.retrieve() if client._provider else None


def is_https(client: Minio) -> bool:
    return client._base_url.is_https


def quote(key: str) -> str:
    return helpers.quote(key)


def check_bucket_name(bucket: str, aws: bool, strict: bool = False) -> None:
    """Refuses the bucket names minio refuses (stricter on AWS hosts; ``strict``: as it
    checks the name of a bucket it creates)."""
    helpers.check_bucket_name(bucket, strict, s3_check=aws)


def get_part_info(size: int, part_size: int) -> tuple[int, int]:
    """(part size, part count) as minio splits an object of ``size`` bytes."""
    return helpers.get_part_info(size, part_size)


# --- the multipart requests, through minio's own signed path ---------------------------

def create_multipart_upload(client: Minio, bucket: str, key: str, headers: dict) -> str:
    return client._create_multipart_upload(bucket, key, headers)


def upload_part(client: Minio, bucket: str, key: str, body: Prehashed, upload_id: str,
                number: int) -> str:
    return client._upload_part(bucket, key, body, None, upload_id, number)  # type: ignore[arg-type]


def complete_multipart_upload(client: Minio, bucket: str, key: str, upload_id: str,
                              parts: list) -> str:
    """The object's ETag as the completion gives it (maybe empty: Ceph tracker 58879)."""
    return (client._complete_multipart_upload(bucket, key, upload_id, parts).etag or ""
            ).strip('"')


def abort_multipart_upload(client: Minio, bucket: str, key: str, upload_id: str) -> None:
    client._abort_multipart_upload(bucket, key, upload_id)
