"""The broker's reconnect policy (sidecar/shell/io/reconnect.py), without a broker."""

from __future__ import annotations

import pytest

from sidecar.shell.io.reconnect import RETRY_BASE, RETRY_MAX, Backoff, describe


def test_the_delay_doubles_up_to_the_cap_jittered_to_half() -> None:
    backoff = Backoff(budget=1000.0)
    backoff.begin_outage(0.0, "lost")
    for attempt in range(12):
        full = min(RETRY_MAX, RETRY_BASE * 2 ** min(attempt, 8))
        delays = [backoff.delay(0.0) for _ in range(50)]
        assert all(full * 0.5 <= d <= full for d in delays), (attempt, delays)
        backoff.attempting()


def test_the_delay_never_passes_the_deadline_and_a_spent_budget_says_so() -> None:
    backoff = Backoff(budget=3.0)
    backoff.start(100.0)
    backoff.attempt = 8  # a full delay is RETRY_MAX, far beyond what is left
    assert backoff.delay(102.5) == pytest.approx(0.5)
    assert not backoff.spent(102.9) and backoff.spent(103.0)


def test_a_new_outage_counts_again_and_the_give_up_names_its_cause() -> None:
    backoff = Backoff(budget=180.0)
    backoff.attempting()
    backoff.begin_outage(5.0, "connection closed")
    assert backoff.attempt == 0 and backoff.left(5.0) == 180.0
    assert backoff.gave_up("refused") == (
        "connection closed; then refused (gave up after SIDECAR_BROKER_RETRY_SECONDS=180s)")
    assert backoff.gave_up("connection closed") == (
        "connection closed (gave up after SIDECAR_BROKER_RETRY_SECONDS=180s)")


def test_describe_reaches_the_root_cause_of_pika_nested_errors() -> None:
    class Workflow(Exception):
        def __init__(self, *errors: BaseException):
            super().__init__()
            self.exceptions = errors

    root = ConnectionRefusedError(111, "Connection refused")
    assert describe(Exception(Workflow(ValueError("first"), root))) == (
        "ConnectionRefusedError: [Errno 111] Connection refused")
    assert describe(TimeoutError()) == "TimeoutError()"
