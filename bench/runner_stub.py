"""A ``Runner`` whose core, adapters and loop are stand-ins that do nothing, for measuring
what the Runner itself costs per event (bench/core_instructions.py ``runner``).

The real ``Runner.__init__`` runs (it constructs only; no I/O); then the core is replaced
by one that returns the recorded effects and transitions of each event in turn, and the
broker, storage, sockets and pika loop by objects whose methods do nothing.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

from sidecar.core import effects as fx
from sidecar.shell import config
from sidecar.shell.loop import Runner

_H = "abcdefghijklmnopqrstuvwxyz012345"
ENV = {
    "DATA_VOLUME_PATH": "", "ITERUM_NAME": f"{_H}-bench", "PIPELINE_HASH": _H,
    "ITERUM_CONFIG": json.dumps({}), "ITERUM_CONFIG_PATH": "config",
    "MINIO_URL": "minio:9000",
    "MINIO_ACCESS_KEY": "bench-access", "MINIO_SECRET_KEY": "bench-secret-key",
    "MINIO_USE_SSL": "0", "MINIO_OUTPUT_BUCKET": f"{_H}-bench-output",
    "MQ_BROKER_URL": "amqp://bench:bench@mq:5672", "MQ_INPUT_QUEUE": f"{_H}-in",
    "MQ_OUTPUT_QUEUE": f"{_H}-out", "MQ_PREFETCH_COUNT": "", "MANAGER_URL": "http://m:3001",
    "TRANSFORMATION_STEP_INPUT": "tts.sock", "TRANSFORMATION_STEP_OUTPUT": "fts.sock",
}


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class _Nothing:
    """The adapters' methods the Runner calls per event, doing nothing."""

    def __init__(self) -> None:
        for name in ("start_consuming", "stop_consuming", "inspect_queue", "ack", "nack",
                     "publish", "download", "upload", "send", "close", "delete", "flush",
                     "stop", "shutdown", "add_callback_threadsafe", "remove_timeout"):
            setattr(self, name, _nothing)


class _Loop(_Nothing):
    def call_later(self, delay: float, callback: Any) -> object:
        return object()


class _Core:
    """Hands out the recorded effects and transitions, one event after another; its next
    deadline is far away and never moves (the loop timer is armed once)."""

    def __init__(self, recorded: list[tuple[Any, float, list[Any], list[Any]]]):
        self._recorded = recorded
        self._i = 0
        self.transitions: list[Any] = []

    def handle(self, event: Any, now: float) -> list[Any]:
        _, _, effects, self.transitions = self._recorded[self._i]
        self._i += 1
        return effects

    def next_deadline(self) -> float:
        return 1e9

    def fragment_of(self, serial: int) -> str:
        return ""

    def state_of(self, fragment_id: str) -> str:
        return ""


def replaying(recorded: list[tuple[Any, float, list[Any], list[Any]]]) -> Any:
    """A stand-in core that replays ``recorded`` (a fresh one per round)."""
    return _Core(recorded)


def stub_runner(recorded: list[tuple[Any, float, list[Any], list[Any]]]) -> Runner:
    env = {**ENV, "DATA_VOLUME_PATH": tempfile.mkdtemp(prefix="runner-bench-")}
    runner = Runner(config.load(env), clock=lambda: 1.0)
    runner.ioloop.close()
    runner.storage.shutdown()
    runner.core = replaying(recorded)
    runner.ioloop = _Loop()  # type: ignore[assignment]
    nothing = _Nothing()
    runner.broker = runner.storage = runner.sockets = runner.checker = nothing  # type: ignore[assignment]
    # bound to the real storage at construction: deletes nothing here
    runner._performers[fx.DeleteFiles] = _nothing
    return runner
