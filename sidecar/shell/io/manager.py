"""The UpstreamChecker (§9): has the step before us finished?

It runs on its own thread because the HTTP call blocks; it posts one event back to the loop,
UpstreamFinished or Fatal. Every failure (unreachable, 404, 409, 5xx, bad JSON) is retried
with jittered backoff within a time budget (§16.11); the original crashed on the first
unreachable poll.

The GET goes through urllib3 (already loaded for S3 by minio) rather than ``requests``,
which cost the start-up ~60 ms of imports and ~4 MiB (issue 14). It keeps what
``requests.Session`` did for us: proxies from the environment (``HTTP(S)_PROXY``,
``NO_PROXY``), the CA bundle of ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` else certifi's, a
10 s connect and read timeout, redirects followed, and no retry of its own (tenacity
retries, and logs each failure).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from ...core.events import Event, Fatal, UpstreamFinished
from ..hooks import NO_HOOKS, ManagerHooks

log = logging.getLogger("sidecar.manager")
DUMMY_POLLS = 5  # the original's dummy checker says "not finished" five times (§9.3)
TIMEOUT = 10.0  # seconds, to connect and for each read
# urllib3 retries nothing itself (tenacity does, logging each failure), follows redirects
RETRY = urllib3.Retry(total=None, connect=0, read=0, other=0, status=0, redirect=5,
                      raise_on_redirect=True)


class ManagerError(Exception):
    pass


class UpstreamChecker:
    def __init__(self, settings: Any, post: Callable[[Event], None],
                 hooks: ManagerHooks = NO_HOOKS):
        self.url = settings.upstream_url
        self.dummy = settings.dummy_manager
        self.interval = settings.manager_poll_interval
        self.budget = settings.manager_retry_seconds
        self.post = post
        self.stopped = threading.Event()
        self.hooks = hooks  # retries counted by the metrics (sidecar/shell/metrics.py)
        self.http = pool_for(self.url) if not self.dummy else None
        self.thread = threading.Thread(target=self._run, name="upstream-checker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        polls = 0
        while not self.stopped.is_set():
            polls += 1
            try:
                finished = polls > DUMMY_POLLS if self.dummy else self._poll()
            except ManagerError as err:
                if not self.stopped.is_set():
                    self.post(Fatal("manager-unavailable", str(err)))
                return
            if finished:
                log.info("upstream finished (after %d poll(s))", polls)
                self.post(UpstreamFinished())
                return
            self.stopped.wait(self.interval)

    def _poll(self) -> bool:
        retrying = Retrying(
            stop=stop_after_delay(self.budget), reraise=True,
            wait=wait_random_exponential(multiplier=0.5, max=max(self.interval, 1.0)),
            retry=retry_if_exception_type(ManagerError), before_sleep=self._before_sleep)
        try:
            return retrying(self._get)
        except ManagerError as err:
            raise ManagerError(f"the manager did not answer usably for {self.budget:g}s; "
                               f"last error: {err}") from None

    def _get(self) -> bool:
        if self.stopped.is_set():
            return False
        assert self.http is not None
        try:
            response = self.http.request("GET", self.url, timeout=TIMEOUT, retries=RETRY)
        except urllib3.exceptions.HTTPError as err:
            raise ManagerError(f"GET {self.url}: {failure_name(err)}") from None
        if response.status != 200:
            raise ManagerError(f"GET {self.url}: HTTP {response.status}")
        try:
            finished = json.loads(response.data)["finished"]
        except (ValueError, KeyError, TypeError):
            text = response.data.decode("utf-8", "replace")
            raise ManagerError(f"GET {self.url}: not {{\"finished\": bool}}: "
                               f"{text[:200]!r}") from None
        if not isinstance(finished, bool):
            raise ManagerError(f"GET {self.url}: 'finished' is not a boolean")
        return finished

    def _before_sleep(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning("upstream check failed (%s); retrying", err, extra={"error": str(err)})
        self.hooks.retry("manager")


def pool_for(url: str) -> urllib3.PoolManager:
    """A pool for ``url``, through the environment's proxy for it unless NO_PROXY
    exempts its host (as requests and Go's net/http decide)."""
    ca_certs = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                or certifi.where())
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, ca_certs=ca_certs)
    return urllib3.PoolManager(ca_certs=ca_certs)


def failure_name(err: urllib3.exceptions.HTTPError) -> str:
    """What failed, named as the log has named it: a timeout, a redirect loop, or any
    other connection failure (refused, reset, dropped mid-answer) as ConnectionError."""
    reason = getattr(err, "reason", None) or err  # MaxRetryError keeps the cause here
    exc = urllib3.exceptions
    if isinstance(reason, exc.TimeoutError) and not isinstance(reason, exc.NewConnectionError):
        return f"Timeout ({type(reason).__name__})"
    if isinstance(reason, exc.ResponseError):  # RETRY gives up only on redirects
        return "TooManyRedirects"
    return f"ConnectionError ({type(reason).__name__})"
