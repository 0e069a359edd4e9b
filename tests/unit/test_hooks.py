"""Observers and adapter hooks are declared once and passed in at construction
(sidecar/shell/hooks.py): the Runner hands its hooks to every adapter, calls its observers
after each event and at the edges of the run, and ``build`` assembles them from settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_config import manager_env

from sidecar.core import Transition
from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell import config
from sidecar.shell.hooks import NO_HOOKS, AdapterHooks, Loop, Observer
from sidecar.shell.loop import Runner
from sidecar.shell.metrics import AdapterMetrics, Metrics, MetricsObserver
from sidecar.shell.operate import Operations, build
from sidecar.shell.recovery import Journal


class Seen(Observer):
    """Overrides every hook, recording what it was called with."""

    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls

    def __call__(self, event: ev.Event, now: float, effects: list[fx.Effect],
                 transitions: list[Transition]) -> None:
        self.calls.append(("event", type(event).__name__))

    def start(self, loop: Loop) -> None:
        self.calls.append(("start", loop))

    def turn_ended(self) -> None:
        self.calls.append(("turn",))

    def exiting(self) -> None:
        self.calls.append(("exiting",))


class OnlyEvents(Observer):
    """Overrides ``__call__`` only: the other hooks are the no-op defaults."""

    def __call__(self, *_: Any) -> None:
        pass


def test_the_runner_hands_its_hooks_to_every_adapter(tmp_path: Path) -> None:
    hooks = AdapterMetrics(Metrics())
    runner = Runner(config.load(manager_env(tmp_path)), hooks=hooks)
    try:
        for adapter in (runner.storage, runner.broker, runner.checker, runner.sockets):
            assert adapter.hooks is hooks
    finally:
        runner.ioloop.close()
    plain = Runner(config.load(manager_env(tmp_path)))
    try:
        assert plain.storage.hooks is NO_HOOKS and plain.observers == ()
    finally:
        plain.ioloop.close()


def test_observers_see_every_event_and_the_exit(tmp_path: Path) -> None:
    calls: list[Any] = []
    runner = Runner(config.load(manager_env(tmp_path)), observers=[Seen(calls), OnlyEvents()])
    try:
        runner.feed(ev.UpstreamFinished())
        assert calls == [("event", "UpstreamFinished")]
        runner._exit(fx.Exit(0, "done"))
        assert calls[-1] == ("exiting",)
    finally:
        runner.ioloop.close()


@pytest.mark.parametrize("hooked", [True, False])
def test_a_loop_turn_ends_once_after_all_its_events(tmp_path: Path, hooked: bool) -> None:
    """On pika's loop: the events one turn feeds (here two posted callbacks and a timer)
    are all handled before the turn's end; the next turn's event gets an end of its own.
    The same with pika's process_timeouts hooked (sidecar/shell/io/pika_turns.py) and with
    its fallback, a zero-delay timer."""
    calls: list[Any] = []
    runner = Runner(config.load(manager_env(tmp_path)), observers=[Seen(calls), OnlyEvents()])
    loop = runner.ioloop
    assert loop.hooked  # this pika is as expected
    loop.hooked = hooked
    try:
        def first() -> None:
            runner.feed(ev.Tick())
            loop.call_later(0, later)  # armed while timers run: pika runs it next turn

        def later() -> None:
            runner.feed(ev.Tick())
            loop.call_later(0, loop.stop)

        loop.add_callback_threadsafe(lambda: runner.feed(ev.UpstreamFinished()))
        loop.add_callback_threadsafe(lambda: runner.feed(ev.Tick()))
        loop.call_later(0, first)
        loop.start()
        assert calls == [("event", "UpstreamFinished"), ("event", "Tick"), ("event", "Tick"),
                         ("turn",), ("event", "Tick"), ("turn",)]
    finally:
        loop.close()


def test_an_observer_is_called_only_for_what_it_overrides(tmp_path: Path) -> None:
    runner = Runner(config.load(manager_env(tmp_path)), observers=[OnlyEvents(), Seen([])])
    try:
        assert [type(o) for o in runner._on_event] == [OnlyEvents, Seen]
        assert [type(o) for o in runner._on_turn] == [Seen]
    finally:
        runner.ioloop.close()


def test_the_defaults_do_nothing() -> None:
    assert NO_HOOKS.request("GetObject", "200", 0.1) is None
    assert NO_HOOKS.on_confirm("ack", 0.1) is None and NO_HOOKS.on_refused("tts") is None
    quiet = OnlyEvents()
    assert quiet.start(NotImplemented) is None and quiet.exiting() is None
    assert quiet.turn_ended() is None
    assert quiet.stop() is None


def test_the_adapter_metrics_count_confirms_refusals_and_manager_retries() -> None:
    metrics = Metrics()
    hooks: AdapterHooks = AdapterMetrics(metrics)
    hooks.on_confirm("ack", 0.002)
    hooks.on_confirm("nack", 0.5)
    hooks.on_refused("tts")
    hooks.retry("manager")
    get = metrics.registry.get_sample_value
    assert get("iterum_sidecar_confirm_seconds_count", {"result": "ack"}) == 1
    assert get("iterum_sidecar_confirm_seconds_sum", {"result": "nack"}) == 0.5
    assert get("iterum_sidecar_connections_refused_total", {"channel": "tts"}) == 1
    assert get("iterum_sidecar_retries_total", {"operation": "manager"}) == 1


def test_build_declares_the_observers_in_start_order(tmp_path: Path) -> None:
    runner = build(config.load(manager_env(tmp_path)))
    try:
        kinds = [type(o) for o in runner.observers]
        assert kinds == [MetricsObserver, Operations, Journal]
        assert isinstance(runner.storage.hooks, AdapterMetrics)
        [ops] = [o for o in runner.observers if isinstance(o, Operations)]
        assert ops.storage is runner.storage.hooks  # its readiness is the hooks' view
        assert all(getattr(o, "core", runner.core) is runner.core for o in runner.observers)
    finally:
        runner.ioloop.close()
    off = build(config.load({**manager_env(tmp_path), "SIDECAR_JOURNAL": "off"}))
    try:
        assert [type(o) for o in off.observers] == [MetricsObserver, Operations]
    finally:
        off.ioloop.close()
    assert not (tmp_path / ".sidecar").exists()  # nothing opened before the run starts
