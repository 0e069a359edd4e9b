"""The shell's exit line: a fatal reason the core already logged as an error is not logged
a second time (§16.11: exhausting a retry budget is one clear error line, then exit 1)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_config import manager_env

from sidecar.core import effects as fx
from sidecar.shell import config
from sidecar.shell.loop import Runner


@pytest.fixture
def runner(tmp_path: Path):
    runner = Runner(config.load(manager_env(tmp_path)))  # constructs only: no I/O yet
    yield runner
    runner.ioloop.close()


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_exit_refers_to_the_fatal_error_instead_of_repeating_it(runner: Runner, caplog):
    reason = "the manager did not answer usably for 2s; last error: HTTP 500"
    with caplog.at_level(logging.INFO):
        runner._log(fx.Log("error", "manager-unavailable", reason))
        runner._exit(fx.Exit(1, reason))
    assert _errors(caplog) == [f"[manager-unavailable] {reason}"]
    [summary] = [r for r in caplog.records if r.getMessage().startswith("exiting")]
    assert summary.levelno == logging.INFO
    assert "exiting with code 1 after" in summary.getMessage()
    assert "[manager-unavailable] (the error above)" in summary.getMessage()
    assert runner.exit_code == 1


def test_exit_with_a_reason_not_logged_before_is_an_error(runner: Runner, caplog):
    reason = "2 input(s) were never finished by the transformation; returned to the queue"
    with caplog.at_level(logging.INFO):
        runner._log(fx.Log("warning", "requeued-unfinished", "something else"))
        runner._exit(fx.Exit(3, reason))
    [error] = _errors(caplog)
    assert error.startswith("exiting with code 3 after") and reason in error


def test_exit_0_is_info_and_names_the_reason(runner: Runner, caplog):
    with caplog.at_level(logging.INFO):
        runner._exit(fx.Exit(0, "done"))
    assert _errors(caplog) == []
    assert any("exiting with code 0 after" in r.getMessage() and ": done (no fragments)"
               in r.getMessage() for r in caplog.records)
