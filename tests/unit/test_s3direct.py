"""sidecar/shell/io/s3direct.py: the lean GET/PUT signs, addresses and fails exactly as minio does.

No network: a fake pool answers both clients, records what each sent, and the signatures are
also checked against botocore's S3SigV4Auth (what AWS and moto verify with). DirectS3 is
built as the adapter builds it, without the client: from the pool, minio's URL builder and
the credential provider the client is given.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from minio import Minio
from minio.credentials import Credentials, StaticProvider
from minio.error import S3Error

from sidecar.shell.io import minio_private, s3direct
from sidecar.shell.io.errors import classify, describe
from sidecar.shell.io.s3direct import DirectS3, error_of, signing_key

HOSTILE = ["plain.txt", "a b/c d.txt", "ünï/cödé ✓.bin", "x+y=z.txt", "100%.txt", "what?.txt",
           "hash#tag", "/lead/slash", "//two", "semi;colon,comma", "tilde~", "amp&and",
           "quote'\"", "back\\slash", "tab\there", "iterum_data/f1/out_1.json"]
NOW = time.struct_time((2026, 3, 4, 5, 6, 7, 2, 63, 0))


class Sent:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: Any):
        self.method, self.path, self.body = method, path, body
        self.headers = {k.lower(): v for k, v in headers.items()}


class FakePool:
    """One host's pool: records the request, answers with the canned response."""

    def __init__(self, owner: FakeHTTP):
        self.owner = owner
        self.pool = object()  # not closed

    def urlopen(self, method: str, url: str, body: Any = None, headers: Any = None,
                preload_content: bool = True, **_: Any) -> urllib3.HTTPResponse:
        self.owner.sent.append(Sent(method, url, dict(headers or {}), body))
        status, ctype, data, extra = self.owner.answer
        response = urllib3.HTTPResponse(
            body=data, status=status, preload_content=preload_content,
            headers={"Content-Type": ctype, "Content-Length": str(len(data)), **extra})
        return response


class FakeHTTP(urllib3.PoolManager):
    """Stands in for the minio client's PoolManager: minio calls urlopen with a full URL,
    DirectS3 the host's pool with a path; both end up in ``sent``."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Sent] = []
        self.answer: tuple[int, str, bytes, dict[str, str]] = (
            200, "application/octet-stream", b"data", {"ETag": '"abc"'})
        self.lookups = 0

    def urlopen(self, method: str, url: str, redirect: bool = True,  # type: ignore[override]
                **kw: Any) -> Any:
        parts = urllib3.util.parse_url(url)
        return FakePool(self).urlopen(method, parts.request_uri, **kw)

    def connection_from_host(self, host: Any, port: Any = None, scheme: Any = "http",
                             pool_kwargs: Any = None) -> Any:
        self.lookups += 1
        self.last_host = (host, port, scheme)
        return FakePool(self)


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both clients sign at the same instant, so their signatures must be equal."""
    monkeypatch.setattr(s3direct, "utc_now", lambda: NOW)
    instant = datetime.fromtimestamp(calendar.timegm(NOW), UTC)
    monkeypatch.setattr("minio.api.time.utcnow", lambda: instant)


def clients(endpoint: str = "127.0.0.1:9000", secure: bool = False, token: str | None = None,
            provider: Any = "static", report: Any = None, region: str = "us-east-1"
            ) -> tuple[Minio, DirectS3, FakeHTTP]:
    """minio's client and a DirectS3 on one fake pool; ``provider`` None: anonymous."""
    http = FakeHTTP()
    if provider == "static":
        provider = StaticProvider("AKIDEXAMPLE", "wJalr/K7MDENG+bPxRfiCY", token)
    client = Minio(endpoint, secure=secure, region=region, http_client=http,
                   credentials=provider)
    base = minio_private.base_url(endpoint, secure, region)
    return client, DirectS3(http, base, provider, report), http


class Rotating:
    """A credential provider whose secret changes (as an assumed role's does)."""

    def __init__(self, secret: str):
        self.secret = secret

    def retrieve(self) -> Credentials:
        return Credentials("AKIDEXAMPLE", self.secret)


def last(http: FakeHTTP) -> Sent:
    return http.sent[-1]


@pytest.mark.parametrize("secure", [False, True])
@pytest.mark.parametrize("key", HOSTILE)
def test_get_sends_what_minio_sends(key: str, secure: bool) -> None:
    client, direct, http = clients(secure=secure)
    client.get_object("bucket", key).release_conn()
    theirs = last(http)
    direct.get("bucket", key).release_conn()
    ours = last(http)
    assert ours.path == theirs.path  # the same quoting of hostile names
    assert ours.method == "GET" and ours.body is None
    assert ours.headers == theirs.headers  # Authorization included: the same signature
    assert ours.headers["x-amz-content-sha256"] == (
        "UNSIGNED-PAYLOAD" if secure else s3direct.EMPTY_SHA256)


@pytest.mark.parametrize("secure", [False, True])
@pytest.mark.parametrize("key", HOSTILE[:8])
def test_put_sends_what_minio_sends(key: str, secure: bool) -> None:
    import io

    client, direct, http = clients(secure=secure)
    body = b"hello \x00 world" * 50
    http.answer = (200, "", b"", {"ETag": '"e7a9"'})
    result = client.put_object("bucket", key, io.BytesIO(body), len(body),
                               content_type="text/plain")
    theirs = last(http)
    assert direct.put("bucket", key, body, "text/plain") == result.etag == "e7a9"
    ours = last(http)
    assert (ours.method, ours.path, ours.body) == ("PUT", theirs.path, body)
    assert ours.headers == theirs.headers  # content-md5 over HTTPS, sha256 over HTTP
    assert ("content-md5" in ours.headers) is secure


def test_session_token_is_sent_and_signed_as_minio_does() -> None:
    client, direct, http = clients(token="FQoGZXIvYXdzE//token+/=")
    client.get_object("bucket", "k").release_conn()
    theirs = last(http)
    direct.get("bucket", "k").release_conn()
    assert last(http).headers == theirs.headers
    assert "x-amz-security-token" in last(http).headers["authorization"]


def test_virtual_host_style_on_aws_as_minio() -> None:
    client, direct, http = clients("s3.amazonaws.com", secure=True)
    client.get_object("my-bucket", "a b/c").release_conn()
    theirs = last(http)
    direct.get("my-bucket", "a b/c").release_conn()
    assert last(http).headers == theirs.headers
    assert last(http).path == theirs.path == "/a%20b/c"
    assert http.last_host == ("my-bucket.s3.us-east-1.amazonaws.com", None, "https")


@pytest.mark.parametrize("secure", [False, True])
@pytest.mark.parametrize("key", HOSTILE)
def test_signature_is_botocores(key: str, secure: bool) -> None:
    """What AWS (and moto with auth on) computes for the request as sent."""
    _, direct, http = clients(secure=secure, token="tok")
    body = key.encode() * 3
    direct.put("bucket", key, body, "application/json")
    sent = last(http)
    scheme = "https" if secure else "http"
    request = AWSRequest(method="PUT", url=f"{scheme}://127.0.0.1:9000{sent.path}", data=body,
                         headers={k: v for k, v in sent.headers.items()
                                  if k not in ("authorization", "user-agent")})
    request.context["timestamp"] = sent.headers["x-amz-date"]
    request.context["payload_signing_enabled"] = not secure
    auth = S3SigV4Auth(BotoCredentials("AKIDEXAMPLE", "wJalr/K7MDENG+bPxRfiCY", "tok"), "s3",
                       "us-east-1")
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)),
                              request)
    assert sent.headers["authorization"].endswith(f"Signature={expected}")
    assert sent.headers["x-amz-content-sha256"] == auth.payload(request)


def test_signing_key_is_computed_once_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, str]] = []
    real = signing_key
    monkeypatch.setattr(s3direct, "signing_key",
                        lambda *a: calls.append(a) or real(*a))
    provider = Rotating("wJalr/K7MDENG+bPxRfiCY")
    _, direct, _ = clients(provider=provider)
    for _ in range(3):
        direct.get("bucket", "k")
    assert calls == [("wJalr/K7MDENG+bPxRfiCY", "20260304", "us-east-1")]
    monkeypatch.setattr(s3direct, "utc_now",
                        lambda: time.struct_time((2026, 3, 5, 0, 0, 1, 3, 64, 0)))
    direct.get("bucket", "k")
    provider.secret = "rotated"  # new credentials
    direct.get("bucket", "k")
    assert [c[:2] for c in calls[1:]] == [("wJalr/K7MDENG+bPxRfiCY", "20260305"),
                                          ("rotated", "20260305")]


def test_signing_key_matches_the_aws_example() -> None:
    # AWS SigV4 documentation's example (secret, 20120215, us-east-1, iam)
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1",
                      "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_the_pool_is_looked_up_once_per_host_and_again_once_closed() -> None:
    _, direct, http = clients()
    direct.get("bucket", "a")
    direct.get("bucket", "b")
    assert http.lookups == 1
    next(iter(direct._pools.values())).pool = None  # what HTTPConnectionPool.close() does
    direct.get("bucket", "c")
    assert http.lookups == 2


def test_requests_are_reported_by_operation_and_status() -> None:
    seen: list[tuple[str, str]] = []
    _, direct, http = clients(report=lambda op, result, secs: seen.append((op, result)))
    direct.get("bucket", "k")
    http.answer = (503, "application/xml", b"<Error><Code>SlowDown</Code></Error>", {})
    with pytest.raises(S3Error):
        direct.put("bucket", "k", b"x", "text/plain")
    assert seen == [("GetObject", "200"), ("PutObject", "503")]


def refusal(get: Any, bucket: str, key: str) -> str | None:
    """The ValueError's message if the name is refused before sending, else None."""
    try:
        get(bucket, key).release_conn()
    except ValueError as err:
        return str(err)
    return None


def test_invalid_names_are_refused_before_sending_as_minio_does() -> None:
    """The same names as this minio (before 7.2.8 it let "a/../b" through to the server)."""
    client, direct, http = clients()
    for bucket, key in (("b", "k"), ("bucket", ""), ("bucket", "a/../b")):
        theirs = refusal(client.get_object, bucket, key)
        sent = len(http.sent)
        assert refusal(direct.get, bucket, key) == theirs
        assert len(http.sent) == sent + (theirs is None)
    assert refusal(client.get_object, "b", "k") is not None  # refused by every minio


def xml_error(code: str, message: str, key: str = "k") -> bytes:
    return (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>{message}</Message><Key>{key}</Key><BucketName>bucket</BucketName>"
            f"<RequestId>r1</RequestId></Error>").encode()


ANSWERS = [
    (404, "application/xml", xml_error("NoSuchKey", "The specified key does not exist.")),
    (404, "application/xml", xml_error("NoSuchBucket", "The bucket does not exist")),
    (403, "application/xml", xml_error("AccessDenied", "Access Denied")),
    (403, "application/xml", xml_error("SignatureDoesNotMatch", "The signature...")),
    (403, "application/xml; charset=utf-8", xml_error("InvalidAccessKeyId", "no such key")),
    (503, "application/xml", xml_error("SlowDown", "Please reduce your request rate.")),
    (500, "application/xml", xml_error("InternalError", "We encountered an internal error.")),
    (400, "application/xml", xml_error("EntityTooLarge", "too large")),
    (502, "text/html", b"<html>Bad Gateway</html>"),
    (500, "application/xml", b""),
    (403, "text/plain", b""),
    (304, "text/plain", b""),
]


@pytest.mark.parametrize("method", ["get", "put"])
@pytest.mark.parametrize(("status", "ctype", "data"), ANSWERS)
def test_errors_are_minios(method: str, status: int, ctype: str, data: bytes) -> None:
    """The same exception, so the same reason, retry decision and message."""
    import io

    client, direct, http = clients()
    http.answer = (status, ctype, data, {})
    with pytest.raises(Exception) as theirs:
        if method == "get":
            client.get_object("bucket", "k")
        else:
            client.put_object("bucket", "k", io.BytesIO(b"x"), 1)
    with pytest.raises(Exception) as ours:
        if method == "get":
            direct.get("bucket", "k")
        else:
            direct.put("bucket", "k", b"x", "application/octet-stream")
    assert type(ours.value) is type(theirs.value)
    assert classify(ours.value) == classify(theirs.value)
    assert describe(ours.value) == describe(theirs.value)


def test_error_classification() -> None:
    def answered(status: int, ctype: str, data: bytes) -> Exception:
        return error_of(urllib3.HTTPResponse(body=data, status=status, preload_content=False,
                                             headers={"Content-Type": ctype}))

    assert classify(answered(*ANSWERS[0])) == ("missing-object", False)
    assert classify(answered(*ANSWERS[2])) == ("access-denied", False)
    assert classify(answered(*ANSWERS[3])) == ("bad-credentials", False)
    assert classify(answered(*ANSWERS[4])) == ("bad-credentials", False)
    assert classify(answered(*ANSWERS[5])) == ("storage-unavailable", True)
    assert classify(answered(*ANSWERS[8])) == ("storage-unavailable", True)
    where = " (bucket/k)" if hasattr(answered(*ANSWERS[0]), "bucket_name") else ""
    assert describe(answered(*ANSWERS[0])) == (  # S3Error names them since minio 7.2.19
        "NoSuchKey: The specified key does not exist." + where)


# --- the bucket check (Minio.bucket_exists) ---------------------------------------------

@pytest.mark.parametrize(("endpoint", "secure"), [("127.0.0.1:9000", False),
                                                  ("127.0.0.1:9000", True),
                                                  ("s3.amazonaws.com", True)])
def test_bucket_check_sends_what_minio_sends(endpoint: str, secure: bool) -> None:
    client, direct, http = clients(endpoint, secure)
    http.answer = (200, "", b"", {})
    assert client.bucket_exists("my-bucket") is True
    theirs = last(http)
    assert direct.bucket_exists("my-bucket") is True
    ours = last(http)
    assert (ours.method, ours.path, ours.body) == ("HEAD", theirs.path, None)
    assert ours.headers == theirs.headers and "authorization" in ours.headers


def test_user_agent_is_the_clients() -> None:
    client, direct, http = clients()
    direct.get("bucket", "k")
    assert last(http).headers["user-agent"] == client._user_agent == minio_private.USER_AGENT


HEAD_ANSWERS = [(200, {}), (404, {}), (403, {}), (400, {"x-amz-bucket-region": "eu-west-1"}),
                (301, {"x-amz-bucket-region": "eu-west-1"}), (307, {}), (405, {}), (409, {}),
                (500, {}), (501, {}), (503, {}), (418, {})]


@pytest.mark.parametrize(("status", "extra"), HEAD_ANSWERS)
def test_bucket_check_answers_as_minio(status: int, extra: dict[str, str]) -> None:
    """True, False or the same exception (type, reason, retry decision, message) for every
    answer to the HEAD, which has no body."""
    client, direct, http = clients()
    http.answer = (status, "application/xml", b"", {"x-amz-request-id": "r1", **extra})
    outcomes = []
    for check in (client.bucket_exists, direct.bucket_exists):
        try:
            outcomes.append(check("bucket"))
        except Exception as err:
            outcomes.append((type(err), classify(err), describe(err), str(err)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] == {200: True, 404: False}.get(status, outcomes[0])


def test_bucket_check_refuses_a_bad_bucket_name_as_minio() -> None:
    client, direct, http = clients()
    for check in (client.bucket_exists, direct.bucket_exists):
        with pytest.raises(ValueError, match="invalid bucket name"):
            check("b")
    assert http.sent == []


def test_bucket_check_is_reported_as_head_bucket() -> None:
    seen: list[tuple[str, str]] = []
    _, direct, http = clients(report=lambda op, result, secs: seen.append((op, result)))
    http.answer = (404, "", b"", {})
    assert direct.bucket_exists("bucket") is False
    assert seen == [("HeadBucket", "404")]


# --- the bucket's creation (Minio.make_bucket) ------------------------------------------

@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
@pytest.mark.parametrize(("endpoint", "secure"), [("127.0.0.1:9000", False),
                                                  ("127.0.0.1:9000", True),
                                                  ("s3.amazonaws.com", True)])
def test_bucket_creation_sends_what_minio_sends(endpoint: str, secure: bool,
                                                region: str) -> None:
    """The same PUT, headers (signature, MD5) and CreateBucketConfiguration body outside
    us-east-1 (a region is letters, digits and dashes: minio's BaseURL checks it)."""
    for provider in ("static", None):
        client, direct, http = clients(endpoint, secure, provider=provider, region=region)
        http.answer = (200, "", b"", {})
        client.make_bucket("my-bucket")
        theirs = last(http)
        direct.make_bucket("my-bucket")
        ours = last(http)
        assert (ours.method, ours.path, ours.body) == ("PUT", theirs.path, theirs.body)
        assert (ours.body is None) is (region == "us-east-1")
        mine = {k: v for k, v in ours.headers.items() if provider or k != "x-amz-content-sha256"}
        assert mine == theirs.headers  # anonymous: minio sends no content hash
        assert ("authorization" in ours.headers) is bool(provider)


CREATE_ANSWERS = [(409, "application/xml", xml_error("BucketAlreadyOwnedByYou", "yours")),
                  (409, "application/xml", xml_error("BucketAlreadyExists", "taken")),
                  (403, "application/xml", xml_error("SignatureDoesNotMatch", "no")),
                  (503, "application/xml", xml_error("SlowDown", "slow")),
                  (500, "text/html", b"<html>oops</html>"), (400, "application/xml", b"")]


@pytest.mark.parametrize(("status", "ctype", "data"), CREATE_ANSWERS)
def test_bucket_creation_fails_as_minio(status: int, ctype: str, data: bytes) -> None:
    client, direct, http = clients()
    http.answer = (status, ctype, data, {})
    failures = []
    for create in (client.make_bucket, direct.make_bucket):
        with pytest.raises(Exception) as caught:
            create("my-bucket")
        err = caught.value
        failures.append((type(err), classify(err), describe(err)))
    assert failures[0] == failures[1]


def test_bucket_creation_refuses_a_bad_bucket_name_as_minio() -> None:
    client, direct, http = clients()
    for create in (client.make_bucket, direct.make_bucket):
        with pytest.raises(ValueError, match="invalid bucket name"):
            create("bucket_with_underscore")  # refused only when created (strict)
    assert http.sent == []


def test_bucket_creation_is_reported_as_create_bucket() -> None:
    seen: list[tuple[str, str]] = []
    _, direct, http = clients(report=lambda op, result, secs: seen.append((op, result)))
    http.answer = (200, "", b"", {})
    direct.make_bucket("bucket")
    assert seen == [("CreateBucket", "200")]
