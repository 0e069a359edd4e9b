"""Every use of the minio client's private internals, in one module, checked at start-up.

The lean GET and PUT (s3direct.py) sign requests themselves on the client's pool,
credentials, URL builder, user agent and region; the bounded-memory multipart upload
(multipart.py) teaches the client to take a pre-hashed body (``_build_headers``) and makes
the multipart requests one at a time. None of that is minio's public API, and a minio
release may rename or change any of it. ``make_client`` checks, before the first request,
that each piece is there with the shape used here. If one is not, the storage adapter logs
one warning line and uses minio's public API only (``get_object``, ``put_object``):
slower, and a multipart upload then holds two parts in memory, but it works.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import urllib3
from minio import helpers
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

#: The parameters each private method must begin with (more are allowed if optional).
METHODS = {
    "_build_headers": ("host", "headers", "body", "creds"),
    "_get_region": ("bucket_name",),
    "_create_multipart_upload": ("bucket_name", "object_name", "headers"),
    "_upload_part": ("bucket_name", "object_name", "data", "headers", "upload_id",
                     "part_number"),
    "_complete_multipart_upload": ("bucket_name", "object_name", "upload_id", "parts"),
    "_abort_multipart_upload": ("bucket_name", "object_name", "upload_id"),
}
HELPERS = ("quote", "check_bucket_name", "get_part_info")


class Prehashed:
    """A request body whose length and payload hash are known: ``headers`` has them."""

    headers: dict[str, str]


class StreamingMinio(Minio):
    """minio's client, taught one thing: a ``Prehashed`` body's headers are taken as they
    are instead of hashing a ``bytes`` body (which it is not)."""

    def _build_headers(self, host: str, headers: dict | None = None, body: Any = None,
                       creds: Any = None) -> tuple[dict, Any]:
        if not isinstance(body, Prehashed):
            return super()._build_headers(host, headers, body, creds)
        headers, date = super()._build_headers(host, headers, None, creds)
        headers.update(body.headers)  # after: minio set the empty body's hash
        return headers, date


def make_client(endpoint: str, **kw: Any) -> tuple[Minio, str | None]:
    """The adapter's client and, if minio's internals are not what this module expects,
    why (then the client is a plain ``Minio``, for the public API only)."""
    problem = _class_problem()
    if problem is None:
        client = StreamingMinio(endpoint, **kw)
        problem = _instance_problem(client)
        if problem is None:
            return client, None
    return Minio(endpoint, **kw), problem


def _class_problem() -> str | None:
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


def _instance_problem(client: StreamingMinio) -> str | None:
    """The attributes, and a dry run of what is used (no request is sent)."""
    try:
        if not isinstance(getattr(client, "_http", None), urllib3.PoolManager):
            return "Minio._http is not a urllib3.PoolManager"
        provider = getattr(client, "_provider", None)
        if provider is not None and not callable(getattr(provider, "retrieve", None)):
            return "Minio._provider has no retrieve()"
        if not isinstance(getattr(client, "_user_agent", None), str):
            return "Minio._user_agent is not a string"
        base = client._base_url
        if not isinstance(base.is_https, bool) or not isinstance(base.is_aws_host, bool):
            return "Minio._base_url has no is_https/is_aws_host"
        url = base.build(method="GET", region="us-east-1", bucket_name="bucket",
                         object_name="k")
        if not (url.path.endswith("/k") and url.netloc and url.scheme):
            return f"Minio._base_url.build gave {url!r}"
        probe = Prehashed()
        probe.headers = {"Content-Length": "1", "x-amz-content-sha256": "probe"}
        headers, _ = client._build_headers("h", {}, probe, None)
        if headers.get("x-amz-content-sha256") != "probe":
            return "Minio._build_headers did not keep a pre-hashed body's headers"
    except Exception as err:  # any surprise at all: the public API is the safe way
        return f"{type(err).__name__}: {err}".replace("\n", " ")
    return None


# --- the accessors: the only reads of minio's private fields ---------------------------

def pool(client: Minio) -> urllib3.PoolManager:
    return client._http


def base_url(client: Minio) -> Any:
    """minio's BaseURL: ``is_https``, ``is_aws_host``, ``build(method=, region=, ...)``."""
    return client._base_url


def credentials(client: Minio) -> Credentials | None:
    """The current credentials (None: anonymous); the provider may rotate them."""
    return client._provider.retrieve() if client._provider else None


def user_agent(client: Minio) -> str:
    return client._user_agent


def region(client: Minio, bucket: str) -> str:
    return client._get_region(bucket)


def quote(key: str) -> str:
    return helpers.quote(key)


def check_bucket_name(client: Minio, bucket: str) -> None:
    helpers.check_bucket_name(bucket, s3_check=client._base_url.is_aws_host)


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
