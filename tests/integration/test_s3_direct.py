"""The lean S3 path (sidecar/io/s3direct.py) against a moto server that checks signatures.

moto verifies SigV4 only once IAM authentication is switched on (``/moto-api/reset-auth``), a
process-wide setting: so this module runs its own moto server in a subprocess, never the
harness' in-process one. The credentials are a real IAM user's (and, for the session token,
an assumed role's) in that server: a wrong signature is answered SignatureDoesNotMatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
import urllib3
from minio import Minio
from minio.credentials import StaticProvider
from minio.error import S3Error

from sidecar.io.s3direct import DirectS3
from sidecar.io.storage import Storage, _describe, classify

pytestmark = pytest.mark.integration

HOSTILE = ["plain.txt", "a b/c d.txt", "ünï/cödé ✓.bin", "x+y=z.txt", "100%.txt", "what?.txt",
           "hash#tag", "/lead/slash", "semi;colon,comma", "tilde~", "amp&and=1"]
S3_ALL = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_auth() -> Iterator[SimpleNamespace]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield _with_iam(url)
    finally:
        proc.terminate()
        proc.wait(10)


def _with_iam(url: str) -> SimpleNamespace:
    """An IAM user and an assumable role allowed s3:*, a bucket; then auth switched on."""
    anon = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "x",
            "aws_secret_access_key": "x"}
    iam = boto3.client("iam", **anon)
    iam.create_user(UserName="sidecar")
    iam.put_user_policy(UserName="sidecar", PolicyName="s3", PolicyDocument=S3_ALL)
    key = iam.create_access_key(UserName="sidecar")["AccessKey"]
    role = iam.create_role(RoleName="sidecar-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"AWS": "*"}}]}))["Role"]
    iam.put_role_policy(RoleName="sidecar-role", PolicyName="s3", PolicyDocument=S3_ALL)
    temp = boto3.client("sts", **anon).assume_role(RoleArn=role["Arn"],
                                                   RoleSessionName="test")["Credentials"]
    boto3.client("s3", **anon).create_bucket(Bucket="direct-auth")
    urllib3.request("POST", f"{url}/moto-api/reset-auth", body=b"0")  # check from now on
    return SimpleNamespace(endpoint=url.removeprefix("http://"), access=key["AccessKeyId"],
                           secret=key["SecretAccessKey"], temp=temp, bucket="direct-auth")


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
        size, etag, sha256 = storage._put(moto_auth.bucket, key, str(source))
        assert sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        dest = tmp_path / "in" / f"{i}.bin"
        assert storage._get(moto_auth.bucket, key, str(dest)) == (size, etag, sha256)
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
        for transfer in (lambda s=storage: s._put(moto_auth.bucket, "k.txt", str(source)),
                         lambda s=storage: s._get(moto_auth.bucket, "k.txt",
                                                  str(tmp_path / "d" / "k"))):
            with pytest.raises(S3Error) as err:
                transfer()
            failures.append((mode, classify(err.value), _describe(err.value)))
    assert [f[1] for f in failures] == [("bad-credentials", False)] * 4
    assert "SignatureDoesNotMatch" in failures[0][2]
    assert [f[1:] for f in failures[:2]] == [f[1:] for f in failures[2:]]


def test_missing_object_fails_as_with_minio(moto_auth: SimpleNamespace, tmp_path: Path) -> None:
    described = []
    for mode in ("direct", "minio"):
        with pytest.raises(S3Error) as err:
            _storage(moto_auth, tmp_path, mode)._get(moto_auth.bucket, "no/such key",
                                                     str(tmp_path / "d" / mode))
        described.append((classify(err.value), _describe(err.value)))
        assert not os.path.exists(tmp_path / "d" / f"{mode}.part")
    assert described[0] == described[1]
    assert described[0][0] == ("missing-object", False)


def test_session_token_of_an_assumed_role(moto_auth: SimpleNamespace) -> None:
    temp = moto_auth.temp
    client = Minio(moto_auth.endpoint, secure=False, region="us-east-1",
                   credentials=StaticProvider(temp["AccessKeyId"], temp["SecretAccessKey"],
                                              temp["SessionToken"]))
    direct = DirectS3(client)
    direct.put(moto_auth.bucket, "temp/creds.txt", b"with a token", "text/plain")
    response = direct.get(moto_auth.bucket, "temp/creds.txt")
    try:
        assert response.read() == b"with a token"
    finally:
        response.release_conn()
    client._provider = StaticProvider(temp["AccessKeyId"], temp["SecretAccessKey"], None)
    with pytest.raises(S3Error):  # the token is what makes these credentials valid
        direct.get(moto_auth.bucket, "temp/creds.txt")
