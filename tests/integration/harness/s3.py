"""S3 for the tests over real HTTP, with request recording and faults, on one of two backends:

* moto's S3 backend in this process (the default). Its signature checking is on: the
  server makes an IAM user allowed s3:* and an assumable role, then switches moto's auth on
  (`/moto-api/reset-auth`, a process-wide setting), so only those real keys work.
* a real S3 server, Ceph RGW (harness/rgw.py), behind the same recording and faulting layer
  acting as a forwarding server: each request goes upstream byte for byte (the Host header
  as signed), so signatures stay valid. `S3Server(upstream=rgw)`.

Either way bucket names are global (moto keeps its state in process-wide backends, RGW is
one server per session). Tests stay apart by using unique bucket names: the Pipeline helper
puts the random 32-character pipeline hash in front of every bucket it makes. Never call
moto's `/moto-api/reset` while other tests may hold buckets.

Requests made by the harness' own client (`harness_client()`) are tagged through the
User-Agent; they are recorded with `harness=True`, left out of `count()` by default and never
hit by injected faults, so a test's setup and checks do not disturb what it measures.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import boto3
import urllib3
from botocore.config import Config
from minio import Minio
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

from sidecar.shell.io.s3ops import MULTIPART, operation

if TYPE_CHECKING:
    from .rgw import Rgw

HARNESS_AGENT = "iterum-harness"
#: ``rewrite(body, headers) -> (body, headers)``: changes an answer (``S3Server.rewrite``)
Rewrite = Callable[[bytes, list[tuple[str, str]]], tuple[bytes, list[tuple[str, str]]]]
S3_ALL = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@dataclass
class S3Request:
    method: str
    bucket: str  # "" for service-level requests (ListBuckets)
    key: str  # "" for bucket-level requests
    query: dict[str, list[str]]
    op: str  # S3 API name (sidecar/shell/io/s3ops.py, as the sidecar's metrics name it)
    harness: bool  # made by the harness' own client
    status: int | None = None  # the status answered (None while in flight or if dropped)
    fault: str | None = None  # "status", "stall", "drop", "rewrite", "corrupt" or "truncate"
    time: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """One injected fault; `times=None` means every matching request until cleared."""

    match: Callable[[S3Request], bool]
    action: str  # "status" | "stall" | "drop" | "rewrite" | "corrupt" | "truncate"
    times: int | None
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    stall_limit: float = 120.0  # a stalled request is let through after this, to never hang
    rewrite: Rewrite | None = None  # "rewrite": moto's answer (status kept) is changed by it
    hits: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    hit_event: threading.Event = field(default_factory=threading.Event)

    def active(self) -> bool:
        return self.times is None or self.hits < self.times

    def release(self) -> None:
        """Let stalled requests (and later matching ones) through to moto."""
        self.released.set()

    def wait_hit(self, timeout: float = 10.0) -> bool:
        """Wait until at least one request matched this fault."""
        return self.hit_event.wait(timeout)


class _Middleware:
    def __init__(self, app, server: S3Server):
        self.app = app
        self.server = server

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace")
        bucket, _, key = path.lstrip("/").partition("/")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        method = environ["REQUEST_METHOD"]
        req = S3Request(method, bucket, key, query, operation(method, bucket, key, query),
                        HARNESS_AGENT in environ.get("HTTP_USER_AGENT", ""))
        fault = self.server._record(req)

        def recording_start_response(status, headers, exc_info=None):
            req.status = int(status.split(None, 1)[0])
            return start_response(status, headers, exc_info)

        if fault is not None and fault.action == "stall":
            fault.released.wait(fault.stall_limit)
        elif fault is not None and fault.action == "rewrite":
            return _rewritten(self.app, environ, fault, recording_start_response)
        elif fault is not None and fault.action == "drop":
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("fault injection: connection dropped")
        elif fault is not None and fault.action in ("corrupt", "truncate"):
            body = self.app(environ, recording_start_response)  # moto's answer, headers as is
            return _damaged(body, fault.action, environ)
        elif fault is not None:
            _drain(environ)  # read the upload so the client sees the answer, not a reset
            body = b"" if method == "HEAD" else _error_xml(fault, path)
            recording_start_response(f"{fault.status} Injected", [
                ("Content-Type", "application/xml"), ("Content-Length", str(len(body))),
                ("x-amz-request-id", req_id := uuid.uuid4().hex[:16].upper()),
                ("x-amz-id-2", req_id)])
            return [body]
        return self.app(environ, recording_start_response)


def _rewritten(app, environ, fault: Fault, start_response):
    """moto's whole answer, passed through ``fault.rewrite`` (body and headers), with its
    Content-Length set to the new body's."""
    answer: list = []
    result = app(environ, lambda status, headers, exc_info=None: answer.extend((status,
                                                                                  headers)))
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    status, headers = answer
    body, headers = fault.rewrite(body, list(headers))  # type: ignore[misc]
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]
def _damaged(body, action: str, environ):
    """The answer's body with one byte flipped (same length), or its first half followed
    by a closed connection (the Content-Length promised more)."""
    data = b"".join(body)
    if hasattr(body, "close"):
        body.close()
    if action == "corrupt":
        middle = len(data) // 2
        yield data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:] if data else b""
        return
    yield data[:len(data) // 2]
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def _drain(environ) -> None:
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length and length.isdigit():
        remaining = int(length)
        while remaining > 0 and (chunk := stream.read(min(remaining, 1 << 20))):
            remaining -= len(chunk)
    elif environ.get("wsgi.input_terminated"):
        while stream.read(1 << 20):
            pass


def _error_xml(fault: Fault, resource: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>INJECTED</RequestId></Error>"
    ).encode()


# Hop-by-hop headers: the forwarding server's own connections, not the request's.
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "proxy-connection"})


class _Forward:
    """A WSGI app that sends each request to an upstream S3 server unchanged: the raw
    request line, every header (Host too, as the client signed it) and the body, streamed
    both ways. Header names reach WSGI upper-cased; SigV4 signs them lower-cased anyway."""

    def __init__(self, host: str, port: int):
        self.pool = urllib3.HTTPConnectionPool(
            host, port, maxsize=64, block=False, retries=False,
            timeout=urllib3.Timeout(connect=10, read=300))

    def __call__(self, environ, start_response):
        headers = {key[5:].replace("_", "-"): value for key, value in environ.items()
                   if key.startswith("HTTP_") and key[5:].lower().replace("_", "-") not in _HOP}
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-")] = environ[key]
        chunked = bool(environ.get("wsgi.input_terminated")) and "CONTENT-LENGTH" not in headers
        body = get_input_stream(environ) if "CONTENT-LENGTH" in headers or chunked else None
        response = self.pool.urlopen(
            environ["REQUEST_METHOD"], environ["REQUEST_URI"], body=body, headers=headers,
            chunked=chunked, redirect=False, assert_same_host=False, preload_content=False,
            decode_content=False)
        start_response(f"{response.status} {response.reason}",
                       [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP])
        return _streamed(response)


def _streamed(response: urllib3.BaseHTTPResponse):
    try:
        yield from response.stream(1 << 16, decode_content=False)
    finally:
        response.release_conn()


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # no access log on the test output
        pass


class S3Server:
    """S3 on http://127.0.0.1:<free port>, in a daemon thread of this process: moto, or a
    forwarding server in front of `upstream` (a real server). Its keys are real ones."""

    region = "us-east-1"

    def __init__(self, host: str = "127.0.0.1", *, upstream: Rgw | None = None):
        self._lock = threading.Lock()
        self._requests: list[S3Request] = []
        self._faults: list[Fault] = []
        inner = (_Forward(*upstream.address) if upstream
                 else DomainDispatcherApplication(create_backend_app))
        app = _Middleware(inner, self)
        self._server = make_server(host, 0, app, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self.url = f"{host}:{self.port}"  # MINIO_URL: host:port, no scheme
        # Ceph RGW 16.2 completes a multipart upload with <ETag></ETag> (tracker 58879): the
        # sidecar then reads the ETag back with one HeadObject (docs/s3-servers.md)
        self.completes_multipart_without_etag = upstream is not None
        self.endpoint = f"http://{self.url}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-server",
                                        daemon=True)
        self._thread.start()
        if upstream:
            self.access_key, self.secret_key = upstream.access_key, upstream.secret_key
            self.role_arn = upstream.role_arn
        else:
            self.access_key, self.secret_key, self.role_arn = _moto_iam(self)
        self.reset()  # the set-up requests are not the tests'

    # --- clients -------------------------------------------------------------------

    def client(self, retries: bool = True, timeout: float = 10.0) -> Minio:
        """A minio client like the sidecar's. Its requests are counted and can be faulted.

        minio-py's default HTTP pool retries 500/502/503/504 and connection errors up to 5
        times inside urllib3 (backoff 0.2 s); `retries=False` shows every error to the caller.
        """
        pool = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout), maxsize=10,
            retries=urllib3.Retry(total=5, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]) if retries else False)
        return Minio(self.url, self.access_key, self.secret_key, secure=False,
                     region=self.region, http_client=pool)

    def harness_client(self) -> Minio:
        """A client for test setup and checks: tagged, so never faulted nor counted."""
        client = self.client()
        client.set_app_info(HARNESS_AGENT, "1")
        return client

    def boto3(self, service: str, access_key: str | None = None,
              secret_key: str | None = None) -> Any:
        """A boto3 client of this endpoint (the harness' keys by default), tagged like
        harness_client()."""
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key,
                            config=Config(user_agent_extra=HARNESS_AGENT))

    def temporary_credentials(self) -> dict[str, str]:
        """AccessKeyId, SecretAccessKey and SessionToken of the harness' assumed role."""
        return self.boto3("sts").assume_role(RoleArn=self.role_arn,
                                             RoleSessionName="iterum-test")["Credentials"]

    # --- recording -----------------------------------------------------------------

    def _record(self, req: S3Request) -> Fault | None:
        with self._lock:
            self._requests.append(req)
            if req.harness:
                return None
            for fault in self._faults:
                if fault.active() and not fault.released.is_set() and fault.match(req):
                    fault.hits += 1
                    req.fault = fault.action
                    fault.hit_event.set()
                    return fault
        return None

    def requests(self, include_harness: bool = False) -> list[S3Request]:
        with self._lock:
            return [r for r in self._requests if include_harness or not r.harness]

    def count(self, op: str | Iterable[str] | None = None, *, bucket: str | None = None,
              key: str | None = None, method: str | None = None,
              include_harness: bool = False) -> int:
        """Requests matching all given filters; `op` is a name or a set of names."""
        match = _matcher(op, bucket, key, method)
        return sum(1 for r in self.requests(include_harness) if match(r))

    def ops(self, include_harness: bool = False) -> Counter:
        """Counter of operation names, e.g. {'PutObject': 3, 'HeadBucket': 1}."""
        return Counter(r.op for r in self.requests(include_harness))

    def multipart_count(self) -> int:
        return self.count(MULTIPART)

    def wait_for(self, op: str | Iterable[str] | None = None, n: int = 1, timeout: float = 10.0,
                 **filters) -> int:
        """Wait until `count(op, **filters) >= n`; return the count or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while (got := self.count(op, **filters)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"S3: {got} of {n} {op or 'requests'} after {timeout}s; "
                                   f"seen {dict(self.ops())}")
            time.sleep(0.02)
        return got

    # --- faults --------------------------------------------------------------------

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(self, times: int | None = 1, status: int = 503, code: str = "SlowDown",
             message: str = "Please reduce your request rate.", *, op=None, bucket=None,
             key=None, method=None, match=None) -> Fault:
        """Answer the next `times` matching requests with `status` and an S3 XML error.

        Codes to use: SlowDown (503), ServiceUnavailable (503), InternalError (500),
        NoSuchKey (404), AccessDenied (403).
        """
        return self._add(Fault(match or _matcher(op, bucket, key, method), "status", times,
                               status, code, message))

    def stall(self, times: int | None = None, *, op=None, bucket=None, key=None, method=None,
              match=None, limit: float = 120.0) -> Fault:
        """Hold matching requests until `fault.release()` (or `limit` seconds)."""
        return self._add(Fault(match or _matcher(op, bucket, key, method), "stall", times,
                               stall_limit=limit))

    def drop(self, times: int | None = 1, *, op=None, bucket=None, key=None, method=None,
             match=None) -> Fault:
        """Close the connection of matching requests without any answer."""
        return self._add(Fault(match or _matcher(op, bucket, key, method), "drop", times))

    def rewrite(self, rewrite: Rewrite, times: int | None = None, *, op=None, bucket=None,
                key=None, method=None, match=None) -> Fault:
        """Let moto answer matching requests, then change its answer: ``rewrite(body,
        headers)`` returns the new (body, headers); headers are (name, value) pairs.
        E.g. a real server's quirk, such as an empty ETag (``without_etag``)."""
        return self._add(Fault(match or _matcher(op, bucket, key, method), "rewrite", times,
                               rewrite=rewrite))

    def corrupt(self, times: int | None = 1, *, op="GetObject", bucket=None, key=None,
                method=None, match=None) -> Fault:
        """Answer matching requests (GETs) with their real headers and body, one byte of
        the body flipped: the same length, other bytes."""
        return self._add(Fault(match or _matcher(op, bucket, key, method), "corrupt", times))

    def truncate(self, times: int | None = 1, *, op="GetObject", bucket=None, key=None,
                 method=None, match=None) -> Fault:
        """Answer matching requests (GETs) with their real headers (Content-Length
        included) and half the body, then close the connection."""
        return self._add(Fault(match or _matcher(op, bucket, key, method), "truncate", times))

    def clear_faults(self) -> None:
        with self._lock:
            faults, self._faults = self._faults, []
        for fault in faults:
            fault.release()

    def reset(self) -> None:
        """Forget recorded requests and remove (and release) every fault."""
        self.clear_faults()
        with self._lock:
            self._requests.clear()

    # --- data helpers --------------------------------------------------------------

    def remove_bucket(self, bucket: str) -> None:
        """Delete a bucket and everything in it (best effort, for teardown)."""
        client = self.harness_client()
        try:
            if not client.bucket_exists(bucket):
                return
            for obj in client.list_objects(bucket, recursive=True):
                client.remove_object(bucket, obj.object_name)
            client.remove_bucket(bucket)
        except Exception:  # teardown must not fail a test
            pass

    def stop(self) -> None:
        self.clear_faults()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def without_etag(body: bytes, headers: list[tuple[str, str]]
                 ) -> tuple[bytes, list[tuple[str, str]]]:
    """The answer with an empty ETag, in the XML body (``<ETag></ETag>``, as Ceph RGW answers
    CompleteMultipartUpload: tracker 58879) and as an empty ETag header."""
    return (re.sub(rb"<ETag>[^<]*</ETag>", b"<ETag></ETag>", body),
            [(k, "" if k.lower() == "etag" else v) for k, v in headers])

_moto_keys: list[tuple[str, str, str]] = []  # moto's IAM and auth switch are process-wide


def _moto_iam(server: S3Server) -> tuple[str, str, str]:
    """An IAM user and an assumable role allowed s3:*; then moto checks every request.
    Made once per process: a later server shares moto's backends, so the same keys."""
    if _moto_keys:
        return _moto_keys[0]
    iam = server.boto3("iam", "moto-bootstrap", "moto-bootstrap")
    iam.create_user(UserName="iterum-harness")
    iam.put_user_policy(UserName="iterum-harness", PolicyName="s3", PolicyDocument=S3_ALL)
    iam.put_user_policy(UserName="iterum-harness", PolicyName="sts", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action":
         "sts:AssumeRole", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="iterum-harness")["AccessKey"]
    role = iam.create_role(RoleName="iterum-harness-role", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action":
         "sts:AssumeRole", "Principal": {"AWS": "*"}}]}))["Role"]
    iam.put_role_policy(RoleName="iterum-harness-role", PolicyName="s3",
                        PolicyDocument=S3_ALL)
    answer = urllib3.request("POST", f"{server.endpoint}/moto-api/reset-auth", body=b"0",
                             headers={"User-Agent": HARNESS_AGENT})
    assert answer.status == 200, answer.data
    _moto_keys.append((key["AccessKeyId"], key["SecretAccessKey"], role["Arn"]))
    return _moto_keys[0]


def _matcher(op, bucket, key, method) -> Callable[[S3Request], bool]:
    ops = {op} if isinstance(op, str) else (set(op) if op is not None else None)

    def match(r: S3Request) -> bool:
        return ((ops is None or r.op in ops) and (bucket is None or r.bucket == bucket)
                and (key is None or r.key == key) and (method is None or r.method == method))

    return match
