"""The demo's S3 side (`iterum-sidecar demo`, sidecar/tools/demo.py): the server it uses
(the embedded one, or ``--s3-endpoint`` with the keys the sidecar reads), its client, and
the removal of a run's buckets from an external server at the end."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from ..shell import config
from ..shell.io import tls


@dataclass(frozen=True)
class S3Target:
    """The S3 server the demo and its sidecar use."""

    url: str  # host:port, as MINIO_URL
    secure: bool
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)


def external_s3(endpoint: str, environ: dict[str, str] | None = None) -> S3Target:
    """``--s3-endpoint`` (http[s]://host:port) with the keys the sidecar itself would read:
    MINIO_ACCESS_KEY and MINIO_SECRET_KEY, or their _FILE variants."""
    env = os.environ if environ is None else environ
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
        raise config.ConfigError("--s3-endpoint", "expected http://host:port or "
                                 "https://host:port", endpoint)
    keys = {v.name: v for v in config.VARIABLES}
    return S3Target(parts.netloc, parts.scheme == "https",
                    config.value(keys["MINIO_ACCESS_KEY"], env),
                    config.value(keys["MINIO_SECRET_KEY"], env))


def client(target: S3Target) -> Minio:
    """The demo's own client (the fragmenter's uploads, the final count), with the TLS and
    region settings the sidecar would use."""
    http = urllib3.PoolManager(**tls.s3_pool_options(
        target.secure, os.environ.get("SIDECAR_S3_CA_FILE", "")))
    return Minio(target.url, target.access_key, target.secret_key, secure=target.secure,
                 region=os.environ.get("SIDECAR_S3_REGION") or "us-east-1", http_client=http)


def remove_buckets(console: Any, storage: Minio, buckets: tuple[str, ...]) -> None:
    """Remove the run's buckets and their objects from the external server; one line for
    what was removed, one for what could not be (the demo's result stands either way)."""
    removed = []
    for bucket in buckets:
        try:
            if not storage.bucket_exists(bucket):
                continue
            names = (DeleteObject(o.object_name) for o in
                     storage.list_objects(bucket, recursive=True) if o.object_name)
            failed = [e.name for e in storage.remove_objects(bucket, names)]
            if failed:
                raise RuntimeError(f"{len(failed)} object(s) not removed, e.g. {failed[0]}")
            storage.remove_bucket(bucket)
            removed.append(bucket)
        except (S3Error, urllib3.exceptions.HTTPError, RuntimeError) as err:
            console.print(f"[yellow]demo: bucket {bucket} could not be removed[/] ({err})",
                          markup=True, highlight=False)
    if removed:
        console.print(f"removed the demo's buckets {' and '.join(removed)} "
                      "(--keep-buckets keeps them)", highlight=False)
