"""The retry policy of S3 requests (tenacity): jittered exponential backoff on transient
failures (errors.py), and ``Tries``, which enters tenacity only once a request failed."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_random_exponential,
)

from .errors import describe, is_missing, is_transient

log = logging.getLogger("sidecar.storage")
BeforeSleep = Callable[[RetryCallState], None]
# The operation a retry counts as (the retries metric), by the name of the function retried:
# transfers.py's requests and multipart.py's.
_RETRIED = {"get": "download", "put_whole": "upload", "make_bucket": "bucket",
            "create_multipart_upload": "upload", "_upload_part": "upload",
            "complete_multipart_upload": "upload", "etag_of": "upload"}


class RetryHook(Protocol):
    def retry(self, operation: str) -> None: ...


def transfer_policy(attempts: int, backoff_max: float, closing: threading.Event,
                    before_sleep: BeforeSleep) -> Retrying:
    """A transfer's requests: ``attempts`` at most, none once the sidecar is exiting."""
    return Retrying(stop=stop_after_attempt(attempts) | stop_when_event_set(closing),
                    wait=wait_random_exponential(multiplier=0.25, max=backoff_max),
                    retry=retry_if_exception(is_transient), reraise=True,
                    before_sleep=before_sleep)


def config_policy(timeout: float) -> Retrying:
    """A config file: the fragmenter uploads them, maybe after we start, so a missing one
    is waited for too, up to ``timeout`` seconds."""
    return Retrying(stop=stop_after_delay(timeout),
                    wait=wait_random_exponential(multiplier=0.5, max=10),
                    retry=retry_if_exception(lambda err: is_transient(err) or is_missing(err)),
                    reraise=True)


def announce(state: RetryCallState, hooks: RetryHook, what: str = "", fragment: str = ""
             ) -> None:
    """A retry is coming: one log line (naming the object and the fragment, ``what``),
    and the retries metric."""
    err = state.outcome.exception() if state.outcome else None
    detail = describe(err) if err else "?"
    log.warning("S3 attempt %d failed (%s); retrying%s", state.attempt_number, detail,
                what, extra={"error": detail, "fragment": fragment})
    hooks.retry(_RETRIED.get(getattr(state.fn, "__name__", ""), "other"))


class Tries:
    """Runs requests under a retry policy, entering tenacity only after a transient
    failure: most transfers succeed at once and so skip its per-call set-up (a policy copy
    and a retry state, about 15 µs). The waits, stops, hooks and counts are the policy's,
    as if the first attempt had been tenacity's own. ``count`` is the most attempts any
    request took (a multipart upload makes several requests)."""

    def __init__(self, policy: Retrying, before_sleep: BeforeSleep | None = None):
        self.policy = policy
        self.before_sleep = before_sleep  # instead of the policy's, e.g. naming the object
        self.count = 1

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:
            first = err
        retrying = (self.policy.copy(before_sleep=self.before_sleep) if self.before_sleep
                    else self.policy.copy())
        try:
            return retrying(_failing_once(fn, first), *args)
        finally:
            self.count = max(self.count, int(retrying.statistics.get("attempt_number", 1)))


def _failing_once(fn: Callable[..., Any], first: BaseException) -> Callable[..., Any]:
    """``fn`` whose first call raises ``first`` again (the attempt already made), so
    tenacity judges it like any other; ``fn``'s name is kept for ``announce``."""
    pending = [first]

    @functools.wraps(fn)
    def again(*args: Any) -> Any:
        if pending:
            raise pending.pop()
        return fn(*args)
    return again
