"""Fixtures for the pure unit tests (no network, no threads, no sleeping)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The helper module lives next to the tests; make it importable under any import mode,
# and find the project itself even when it is not pip-installed and pytest is run as
# `pytest` rather than `python -m pytest` (which adds the current directory).
HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1]):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from unit_driver import Driver  # noqa: E402


@pytest.fixture
def drv() -> Driver:
    return Driver()


@pytest.fixture
def make_driver() -> Callable[..., Driver]:
    return Driver
