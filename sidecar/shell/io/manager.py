"""The UpstreamChecker (§9): has the step before us finished?

It runs on its own thread because ``requests`` blocks; it posts one event back to the loop,
UpstreamFinished or Fatal. Every failure (unreachable, 404, 409, 5xx, bad JSON) is retried
with jittered backoff within a time budget (§16.11); the original crashed on the first
unreachable poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import requests
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
        self.session = requests.Session()
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
        try:
            response = self.session.get(self.url, timeout=10)
        except requests.RequestException as err:
            raise ManagerError(f"GET {self.url}: {type(err).__name__}") from None
        if response.status_code != 200:
            raise ManagerError(f"GET {self.url}: HTTP {response.status_code}")
        try:
            finished = response.json()["finished"]
        except (ValueError, KeyError, TypeError):
            raise ManagerError(f"GET {self.url}: not {{\"finished\": bool}}: "
                               f"{response.text[:200]!r}") from None
        if not isinstance(finished, bool):
            raise ManagerError(f"GET {self.url}: 'finished' is not a boolean")
        return finished

    def _before_sleep(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning("upstream check failed (%s); retrying", err, extra={"error": str(err)})
        self.hooks.retry("manager")
