"""The manager check's HTTP through urllib3 (it replaced requests, issue 14): what
requests.Session did for it is kept (proxies from the environment, redirects followed, no
retry of its own), and failures are named as before (the reliability tests read the names).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3

from sidecar.shell.io.manager import ManagerError, UpstreamChecker, failure_name, pool_for

ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/finished": (200, {}, b'{"finished": true}'),
    "/moved": (302, {"Location": "/finished"}, b""),
    "/loop": (302, {"Location": "/loop"}, b""),
    "/busy": (409, {}, b"conflict"),
    "/text": (200, {}, b"not json"),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, headers, body = ANSWERS[self.path]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def checker(url: str) -> UpstreamChecker:
    settings = SimpleNamespace(upstream_url=url, dummy_manager=False,
                               manager_poll_interval=1.0, manager_retry_seconds=1.0)
    return UpstreamChecker(settings, lambda _event: None)


def test_an_answer_is_read_and_a_redirect_followed(server: str) -> None:
    assert checker(server + "/finished")._get() is True
    assert checker(server + "/moved")._get() is True


@pytest.mark.parametrize(("path", "named"), [
    ("/busy", "HTTP 409"), ("/text", "not {\"finished\": bool}: 'not json'"),
    ("/loop", "TooManyRedirects")])
def test_an_unusable_answer_is_a_manager_error_that_says_why(server: str, path: str,
                                                             named: str) -> None:
    with pytest.raises(ManagerError, match=named.replace("{", r"\{").replace("}", r"\}")):
        checker(server + path)._get()


def test_nothing_listening_is_a_connection_error_tried_once() -> None:
    with pytest.raises(ManagerError, match=r"ConnectionError \(NewConnectionError\)"):
        checker("http://127.0.0.1:9/x")._get()  # port 9 (discard): nothing listens


def test_failures_are_named_as_requests_named_them() -> None:
    pool = urllib3.HTTPConnectionPool("h")
    timeout = urllib3.exceptions.ReadTimeoutError(pool, "/", "read timed out")
    dropped = urllib3.exceptions.ProtocolError("Connection aborted.")
    assert failure_name(urllib3.exceptions.MaxRetryError(pool, "/", timeout)) \
        == "Timeout (ReadTimeoutError)"
    assert failure_name(urllib3.exceptions.MaxRetryError(pool, "/", dropped)) \
        == "ConnectionError (ProtocolError)"
    assert failure_name(dropped) == "ConnectionError (ProtocolError)"


def test_the_environment_s_proxy_is_used_unless_no_proxy_exempts_the_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert type(pool_for("http://manager:8080/x")) is urllib3.PoolManager
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert isinstance(pool_for("http://manager:8080/x"), urllib3.ProxyManager)
    monkeypatch.setenv("NO_PROXY", "manager,.svc")
    assert type(pool_for("http://manager:8080/x")) is urllib3.PoolManager


def test_the_json_body_must_hold_a_boolean(server: str) -> None:
    ANSWERS["/null"] = (200, {}, json.dumps({"finished": None}).encode())
    with pytest.raises(ManagerError, match="'finished' is not a boolean"):
        checker(server + "/null")._get()
