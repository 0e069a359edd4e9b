"""The lean S3 path (sidecar/shell/io/s3direct.py) against the harness' S3, which checks
signatures: moto with IAM authentication on, or Ceph RGW (--s3=rgw). The credentials are a
real user's (and, for the session token, an assumed role's) in that server. Which error a
server answers to a wrong secret differs (moto: SignatureDoesNotMatch; RGW: AccessDenied
with STS on, SignatureDoesNotMatch without): the tests check what the sidecar makes of it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import urllib3
from minio import Minio
from minio.credentials import StaticProvider
from minio.error import S3Error

from sidecar.shell.io.errors import classify, describe
from sidecar.shell.io.minio_private import base_url
from sidecar.shell.io.s3direct import DirectS3
from sidecar.shell.io.storage import Storage

from .harness import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.s3]  # also on RGW (-m s3 --s3=rgw)

HOSTILE = ["plain.txt", "a b/c d.txt", "ünï/cödé ✓.bin", "x+y=z.txt", "100%.txt", "what?.txt",
           "hash#tag", "/lead/slash", "semi;colon,comma", "tilde~", "amp&and=1"]
# What a server may answer to credentials it does not accept, and what the sidecar makes of
# each: a permanent failure, never retried.
AUTH_CODES = {"AccessDenied": "access-denied", "SignatureDoesNotMatch": "bad-credentials",
              "InvalidAccessKeyId": "bad-credentials"}


@pytest.fixture(scope="module")
def moto_auth(s3_server: S3Server) -> Iterator[SimpleNamespace]:
    """The harness' server (the name is from when this module ran a moto of its own): its
    keys, an assumed role's temporary credentials, and a bucket of this module's."""
    bucket = f"direct-auth-{uuid.uuid4().hex[:12]}"
    s3_server.harness_client().make_bucket(bucket)
    yield SimpleNamespace(endpoint=s3_server.url, access=s3_server.access_key,
                          secret=s3_server.secret_key, temp=s3_server.temporary_credentials(),
                          bucket=bucket)
    s3_server.remove_bucket(bucket)


def _storage(moto: SimpleNamespace, volume: Path, mode: str, secret: str = "") -> Storage:
    settings = SimpleNamespace(
        data_volume_path=str(volume), minio_url=moto.endpoint, minio_access_key=moto.access,
        minio_secret_key=secret or moto.secret, minio_use_ssl=False, s3_ca_file="",
        minio_output_bucket=moto.bucket, storage_workers=1, storage_attempts=1,
        storage_backoff_max=0.1, storage_timeout=5, s3_region="us-east-1",
        part_size=16 << 20, s3_small_objects=mode)
    storage = Storage(settings, lambda event: None)
    storage.pool.shutdown()
    return storage


@pytest.mark.parametrize("mode", ["direct", "minio"])
def test_signed_put_and_get_of_hostile_keys(moto_auth: SimpleNamespace, tmp_path: Path,
                                            mode: str) -> None:
    storage = _storage(moto_auth, tmp_path, mode)
    assert (storage.direct is not None) is (mode == "direct")
    for i, key in enumerate(HOSTILE):
        key = f"{mode}/{key}"
        source = tmp_path / f"out{i}.json"
        source.write_bytes(key.encode() * 7 if i else b"")  # and an empty file
        size, etag, sha256 = storage.transfers.put(moto_auth.bucket, key, str(source))
        assert sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        dest = tmp_path / "in" / f"{i}.bin"
        assert storage.transfers.get(moto_auth.bucket, key, str(dest)) == (size, etag, sha256)
        assert dest.read_bytes() == source.read_bytes(), key
    # what the other client wrote, read back: both address the same objects
    check = Minio(moto_auth.endpoint, moto_auth.access, moto_auth.secret, secure=False,
                  region="us-east-1")
    names = {o.object_name for o in check.list_objects(moto_auth.bucket, prefix=f"{mode}/",
                                                        recursive=True)}
    assert names == {f"{mode}/{key}" for key in HOSTILE}


def test_a_wrong_secret_fails_as_with_minio(moto_auth: SimpleNamespace, tmp_path: Path) -> None:
    """The server really checks: and the failure reads the same either way."""
    source = tmp_path / "x.txt"
    source.write_text("x")
    failures = []
    for mode in ("direct", "minio"):
        storage = _storage(moto_auth, tmp_path, mode, secret="not-the-secret")
        for transfer in (lambda s=storage: s.transfers.put(moto_auth.bucket, "k.txt", str(source)),
                         lambda s=storage: s.transfers.get(moto_auth.bucket, "k.txt",
                                                  str(tmp_path / "d" / "k"))):
            with pytest.raises(S3Error) as err:
                transfer()
            failures.append((mode, classify(err.value), describe(err.value)))
    code = next((c for c in AUTH_CODES if c in failures[0][2]), None)  # the server's choice
    assert code, failures
    assert [f[1] for f in failures] == [(AUTH_CODES[code], False)] * 4  # permanent
    assert [f[1:] for f in failures[:2]] == [f[1:] for f in failures[2:]]


def test_missing_object_fails_as_with_minio(moto_auth: SimpleNamespace, tmp_path: Path) -> None:
    described = []
    for mode in ("direct", "minio"):
        with pytest.raises(S3Error) as err:
            _storage(moto_auth, tmp_path, mode).transfers.get(moto_auth.bucket, "no/such key",
                                                     str(tmp_path / "d" / mode))
        described.append((classify(err.value), describe(err.value)))
        assert not os.path.exists(tmp_path / "d" / f"{mode}.part")
    assert described[0] == described[1]
    assert described[0][0] == ("missing-object", False)


def test_session_token_of_an_assumed_role(moto_auth: SimpleNamespace) -> None:
    temp = moto_auth.temp
    provider = StaticProvider(temp["AccessKeyId"], temp["SecretAccessKey"],
                              temp["SessionToken"])
    direct = DirectS3(urllib3.PoolManager(), base_url(moto_auth.endpoint, False, "us-east-1"),
                      provider)
    direct.put(moto_auth.bucket, "temp/creds.txt", b"with a token", "text/plain")
    response = direct.get(moto_auth.bucket, "temp/creds.txt")
    try:
        assert response.read() == b"with a token"
    finally:
        response.release_conn()
    direct = DirectS3(urllib3.PoolManager(), base_url(moto_auth.endpoint, False, "us-east-1"),
                      StaticProvider(temp["AccessKeyId"], temp["SecretAccessKey"], None))
    with pytest.raises(S3Error) as err:  # the token is what makes these credentials valid
        direct.get(moto_auth.bucket, "temp/creds.txt")
    assert classify(err.value) == (AUTH_CODES[err.value.code], False)


def test_the_bucket_check_answers_as_minios(moto_auth: SimpleNamespace) -> None:
    """HEAD of a bucket, signed: there, missing, and refused (no body: minio names the
    error by its status) read the same as ``Minio.bucket_exists``."""
    outcomes = []
    for secret in (moto_auth.secret, "not-the-secret"):
        client = Minio(moto_auth.endpoint, moto_auth.access, secret, secure=False,
                       region="us-east-1")
        direct = DirectS3(urllib3.PoolManager(), base_url(moto_auth.endpoint, False,
                                                          "us-east-1"),
                          StaticProvider(moto_auth.access, secret))
        for check in (client.bucket_exists, direct.bucket_exists):
            for bucket in (moto_auth.bucket, f"missing-{uuid.uuid4().hex[:12]}"):
                try:
                    outcomes.append(check(bucket))
                except S3Error as err:
                    outcomes.append((classify(err), describe(err).replace(bucket, "B")))
    assert outcomes[:2] == outcomes[2:4] == [True, False]
    assert outcomes[4:6] == outcomes[6:8] and outcomes[4] is not True, outcomes
