"""The operations rules of the core (docs/operations.md): stuck-fragment detection and intake
control (pause consuming while the transformation is gone or the volume is nearly full,
resume after). Pure: events in, effects out, the clock only through deadlines."""

from __future__ import annotations

import itertools

import pytest
from test_core_replay import busy_run
from test_core_resume import restart_and_loss_run
from unit_driver import FTS, TTS, Driver, fid, log_codes, make_config, of

from sidecar.core import Core
from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.core.models import _terminal

A, B, C = fid("a"), fid("b"), fid("c")
MIN_FREE = 1000


def operated(**overrides) -> Driver:
    cfg = dict(stuck_after=60.0, volume_min_free=MIN_FREE, pause_when_orphaned=True)
    cfg.update(overrides)
    drv = Driver(**cfg)
    drv.start()
    return drv


def consumer_effects(effects: list[fx.Effect]) -> list[fx.Effect]:
    return of(effects, fx.StartConsuming, fx.StopConsuming)


# --- stuck fragments ---------------------------------------------------------------------


def test_a_fragment_too_long_in_one_state_is_reported_once_with_its_id() -> None:
    drv = operated()
    drv.connect()
    drv.ready_input(1, A)
    assert drv.state(A) == "dispatched"
    entered = drv.inputs[A].history[-1][1]
    assert drv.core.next_deadline() == pytest.approx(entered + 60)

    assert "stuck-input-dispatched" not in log_codes(drv.after(59.9))
    out = drv.feed(ev.Tick(), at=entered + 60)
    [log] = [e for e in of(out, fx.Log) if e.code.startswith("stuck")]
    assert (log.code, log.level, log.fragment) == ("stuck-input-dispatched", "warning", A)
    assert "dispatched for 60s" in log.message
    assert drv.core.counts["stuck-input-dispatched"] == 1
    assert drv.core.stuck() == [drv.inputs[A]]

    # reported once per state entry: later ticks stay quiet
    assert drv.core.next_deadline() is None
    assert not [c for c in log_codes(drv.after(500)) if c.startswith("stuck")]

    # a new state restarts the clock, and is no longer "stuck"
    drv.output([A])  # its upload gates the ack: A stays "processed" after done_with
    drv.done(A)
    assert drv.state(A) == "processed"
    assert drv.core.stuck() == []
    [output] = drv.core.outputs.values()
    assert drv.core.next_deadline() == pytest.approx(output.history[-1][1] + 60)


def test_outputs_waiting_for_a_confirm_are_reported_too() -> None:
    drv = operated()
    drv.connect()
    drv.ready_input(1, A)
    uploads = drv.output([A])
    drv.upload(uploads)  # the descriptor publish is never confirmed
    out = drv.after(61)
    assert "stuck-output-uploaded" in log_codes(out)


def test_stuck_detection_off_sets_no_deadline() -> None:
    drv = operated(stuck_after=0.0)
    drv.connect()
    drv.ready_input(1, A)
    assert drv.core.next_deadline() is None
    assert not [c for c in log_codes(drv.after(10_000)) if c.startswith("stuck")]


def test_stuck_deadline_is_cleared_at_exit() -> None:
    drv = operated()
    drv.connect()
    drv.ready_input(1, A)
    drv.feed(ev.ShutdownRequested("SIGTERM"))
    drv.done(A)
    drv.disconnect()
    assert [e.code for e in of(drv.effects, fx.Exit)] == [0]
    assert drv.core.deadlines == {}


def watched_by_scanning(core: Core) -> list:
    """What the stuck watch waits on, found the slow way (every fragment in flight)."""
    return [m for m in itertools.chain(core.inputs.values(), core.outputs.values())
            if m.stuck_reported != len(m.history) and not _terminal(m)]


def assert_watch_consistent(core: Core) -> None:
    watched = watched_by_scanning(core)
    assert set(core.parts.fragments.entered) == set(watched)
    entered = [m.history[-1][1] for m in core.parts.fragments.entered]
    assert entered == sorted(entered), "the first one is the oldest"
    due = min((m.history[-1][1] for m in watched), default=None)
    expected = None if due is None else due + core.cfg.stuck_after
    assert core.deadlines.get("stuck") == expected


@pytest.mark.parametrize("stuck_after", [0.0025, 300.0])
@pytest.mark.parametrize("run", [busy_run, restart_and_loss_run])
def test_the_stuck_deadline_is_the_oldest_state_entry_at_every_event(run, stuck_after) -> None:
    """The watch keeps its fragments in order instead of scanning them all after every
    event: after every event of busy runs (fragments stuck all the time, reported at every
    tick the loop would make), it still gives what a scan gives, and so does a core
    restored from a snapshot at any event, which then continues identically. Events are
    1 ms apart: at 2.5 ms many fragments get stuck, at 300 s none does."""
    cfg = make_config(stuck_after=stuck_after)
    core, reports = Core(cfg), 0
    for event, at in with_ticks(core, run().journal):
        restored = Core.restore(cfg, core.snapshot())
        assert_watch_consistent(restored)
        out = core.handle(event, at)
        assert_watch_consistent(core)
        assert restored.handle(event, at) == out
        assert restored.deadlines == core.deadlines
        reports += sum(e.code.startswith("stuck-") for e in of(out, fx.Log))
    assert reports >= 5 if stuck_after < 1 else reports == 0
    assert core.step.state == "exited"


def with_ticks(core: Core, journal: list):
    """The journal's events, with a Tick first whenever the core's deadline has come (as
    the loop's timer would fire it)."""
    for event, at, _, _ in journal:
        deadline = core.next_deadline()
        if deadline is not None and deadline <= at:
            yield ev.Tick(), at
        yield event, at


# --- the volume ----------------------------------------------------------------------------


def test_a_nearly_full_volume_pauses_intake_and_space_resumes_it() -> None:
    drv = operated()
    drv.connect()
    out = drv.feed(ev.VolumeSpace(free_bytes=MIN_FREE - 1, total_bytes=10 * MIN_FREE))
    assert consumer_effects(out) == [fx.StopConsuming()]
    assert log_codes(out) == ["volume-low", "intake-paused"]
    assert drv.core.paused == ("volume-low",)

    # the cancel completes: this is a pause, not the end of the input
    assert drv.feed(ev.ConsumerStopped()) == []
    assert drv.core.step.state == "consuming"

    # hysteresis: back above the limit but not 25% above it stays paused
    assert drv.feed(ev.VolumeSpace(MIN_FREE + 200, 10 * MIN_FREE)) == []
    out = drv.feed(ev.VolumeSpace(MIN_FREE + MIN_FREE // 4, 10 * MIN_FREE))
    assert consumer_effects(out) == [fx.StartConsuming(4)]
    assert log_codes(out) == ["volume-ok", "intake-resumed"]
    assert drv.core.paused == ()


def test_resume_waits_for_the_cancel_to_complete() -> None:
    """Re-consuming before cancel-ok would reuse a consumer tag the broker still knows."""
    drv = operated()
    drv.feed(ev.VolumeSpace(0, 10 * MIN_FREE))
    assert drv.core.cancelling
    assert consumer_effects(drv.feed(ev.VolumeSpace(10 * MIN_FREE, 10 * MIN_FREE))) == []
    assert consumer_effects(drv.feed(ev.ConsumerStopped())) == [fx.StartConsuming(4)]


def test_deliveries_in_flight_when_pausing_are_processed() -> None:
    drv = operated()
    drv.connect()
    drv.feed(ev.VolumeSpace(0, 10 * MIN_FREE))
    drv.ready_input(1, A)  # sent by the broker before it saw the cancel
    assert drv.state(A) == "dispatched"


def test_low_volume_at_start_delays_consuming() -> None:
    drv = Driver(volume_min_free=MIN_FREE)
    drv.feed(ev.VolumeSpace(1, 10 * MIN_FREE))
    out = drv.start()
    assert consumer_effects(out) == []
    assert "intake-paused" in log_codes(out)
    out = drv.feed(ev.VolumeSpace(10 * MIN_FREE, 10 * MIN_FREE))
    assert consumer_effects(out) == [fx.StartConsuming(4)]


def test_volume_rule_off_only_records_the_free_space() -> None:
    drv = operated(volume_min_free=0)
    assert drv.feed(ev.VolumeSpace(0, 100)) == []
    assert drv.core.volume_free == 0


# --- the transformation --------------------------------------------------------------------


def test_intake_pauses_while_the_transformation_is_gone_and_resumes_on_reconnect() -> None:
    drv = operated()
    drv.connect()
    drv.ready_input(1, A)
    out = drv.disconnect()
    assert consumer_effects(out) == [fx.StopConsuming()]
    assert "intake-paused" in log_codes(out)
    assert drv.core.paused == ("transformation-absent",)
    drv.feed(ev.ConsumerStopped())

    out = drv.connect(tts=3, fts=4)
    assert consumer_effects(out) == [fx.StartConsuming(4)]
    assert "intake-resumed" in log_codes(out)
    assert [f.conn for f in of(out, fx.SendFrame)] == [3]  # A is sent again, too


def test_without_the_rule_a_disconnect_keeps_consuming() -> None:
    drv = operated(pause_when_orphaned=False)
    drv.connect()
    assert consumer_effects(drv.disconnect()) == []


def test_the_end_of_the_input_while_paused_needs_no_second_cancel() -> None:
    drv = operated()
    drv.connect()
    drv.disconnect()
    drv.feed(ev.ConsumerStopped())  # the pause's cancel completed
    drv.feed(ev.UpstreamFinished())
    out = drv.feed(ev.QueueInspected(0))
    assert consumer_effects(out) == []
    assert drv.core.step.state == "kill_sent"  # nothing left to dispatch
    # the transformation comes back: the input has ended, so no re-consume
    out = drv.connect(tts=3, fts=4)
    assert consumer_effects(out) == []
    assert [f.payload for f in of(out, fx.SendFrame)] == [b'{"status":"complete"}']


def test_the_end_of_the_input_while_the_pause_cancel_is_in_flight() -> None:
    drv = operated()
    drv.connect()
    drv.disconnect()  # StopConsuming sent, not yet confirmed
    drv.feed(ev.UpstreamFinished())
    assert consumer_effects(drv.feed(ev.QueueInspected(0))) == []
    assert drv.core.step.state == "draining_queue"
    drv.feed(ev.ConsumerStopped())
    assert drv.core.step.state == "kill_sent"


def test_stopping_never_resumes_intake() -> None:
    drv = operated()
    drv.connect(TTS, FTS)
    drv.feed(ev.VolumeSpace(0, 10 * MIN_FREE))
    drv.feed(ev.ConsumerStopped())
    drv.feed(ev.ShutdownRequested("SIGTERM"))
    out = drv.feed(ev.VolumeSpace(10 * MIN_FREE, 10 * MIN_FREE))
    assert consumer_effects(out) == []
    assert drv.core.step.state in ("stopping", "exited")
