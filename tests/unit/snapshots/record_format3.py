"""Record format3.json: format-3 snapshots (the intake as six flags) taken by the core of
6d5ccdc, each with the events that followed and what that core did with them.

    git worktree add /tmp/base 6d5ccdc
    python tests/unit/snapshots/record_format3.py /tmp/base > tests/unit/snapshots/format3.json
    python tests/unit/snapshots/record_format3.py /tmp/base tests/unit/snapshots/journals

It imports the core and the unit-test driver of the checkout given, so it must be run
against a checkout from before snapshot format 4. One snapshot per combination of the
flags (and the step's state) that the scenarios reach: test_snapshot.py restores each with
today's core, feeds the same events and expects the same effects and transitions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BASE = Path(sys.argv[1]).resolve()
sys.path[:0] = [str(BASE), str(BASE / "tests" / "unit")]

from test_core_replay import busy_run  # noqa: E402
from test_core_resume import restart_and_loss_run  # noqa: E402
from unit_driver import Driver, fid  # noqa: E402

from sidecar.core import codec  # noqa: E402
from sidecar.core import events as ev  # noqa: E402
from sidecar.core.snapshot import FORMAT, config_to_json, snapshot  # noqa: E402

assert FORMAT == 3, f"{BASE} writes snapshot format {FORMAT}, not 3"
A, B = fid("a"), fid("b")
LOST = ev.BrokerLost("connection reset")
FLAGS = ("consuming", "cancelling", "pause_cancel", "intake_ended", "broker_up", "adopting")


def paused_run() -> Driver:
    """Pauses for both reasons, a loss while paused, the end while a pause's cancel is in
    flight."""
    drv = Driver(volume_min_free=1000, pause_when_orphaned=True, stuck_after=60.0)
    drv.feed(ev.VolumeSpace(1, 10_000))
    drv.start()  # held: the volume is low
    drv.connect()
    drv.feed(ev.VolumeSpace(10_000, 10_000))  # consuming
    drv.ready_input(1, A)
    drv.feed(ev.VolumeSpace(1, 10_000))  # pausing
    drv.feed(ev.ConsumerStopped())  # paused
    drv.feed(LOST)
    drv.start()  # back, still held
    drv.feed(ev.VolumeSpace(10_000, 10_000))  # consuming again
    drv.disconnect()  # pausing: the transformation is away
    drv.feed(ev.UpstreamFinished())
    drv.feed(ev.QueueInspected(0))  # the pause's cancel now ends the input
    drv.feed(ev.ConsumerStopped())
    drv.connect(3, 4)
    drv.done(A, conn=4)
    drv.kill(conn=4)
    return drv


def adopting_run() -> Driver:
    """The input ends, the connection is lost, an input's delivery is taken back."""
    drv = Driver()
    drv.start()
    drv.connect()
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    drv.end_input()
    drv.feed(LOST)
    drv.done(A)
    drv.start()  # adopting
    drv.feed(ev.Delivered(1, drv.inputs[B].body, redelivered=True))  # B taken back
    drv.feed(ev.QueueInspected(0))  # adoption ending
    drv.feed(ev.ConsumerStopped())
    drv.done(B)
    drv.kill()
    return drv


def sigterm_while_down_run() -> Driver:
    drv = Driver()
    drv.start()
    drv.connect()
    drv.ready_input(1, A)
    drv.feed(LOST)
    drv.feed(ev.ShutdownRequested("SIGTERM"))  # the end while the broker is away
    drv.start()
    drv.after(30)
    return drv


def gone_run() -> Driver:
    drv = Driver()
    drv.start()
    drv.connect()
    drv.ready_input(1, A)
    drv.feed(ev.BrokerLost("refused", retrying=False))
    drv.after(30)
    return drv


def record_journals(directory: Path) -> None:
    """Two runs as journals of small segments: each later segment's checkpoint is one that
    replay compares with the state it reached."""
    from sidecar.shell.journal import Recorder

    original = Driver.__init__

    def recording(target: Path, recorders: list) -> object:
        def init(self: Driver, **overrides: object) -> None:
            original(self, **overrides)
            recorders.append(Recorder(str(target), self.core, max_bytes=1500, keep=100))
            self.observers.append(recorders[-1])
        return init

    for run in (paused_run, adopting_run):
        recorders: list = []
        Driver.__init__ = recording(directory / run.__name__, recorders)  # type: ignore
        try:
            run()
        finally:
            Driver.__init__ = original  # type: ignore[method-assign]
        for recorder in recorders:
            recorder.close()


def main() -> None:
    if len(sys.argv) > 2:
        record_journals(Path(sys.argv[2]))
        return
    cases, seen = [], set()
    for run in (busy_run, restart_and_loss_run, paused_run, adopting_run,
                sigterm_while_down_run, gone_run):
        drv = run()
        events = [(codec.encode(e), t) for e, t, _, _ in drv.journal]
        results = [([codec.encode_effect(x) for x in out],
                    [codec.encode_transition(x) for x in trs]) for _, _, out, trs in drv.journal]
        replayed = Driver(**config_to_json(drv.core.cfg))
        for i, (e, t, _, _) in enumerate(drv.journal):
            state = json.loads(json.dumps(snapshot(replayed.core)))
            key = (tuple(state[f] for f in FLAGS), state["step"]["state"])
            if key not in seen and i > 0:
                seen.add(key)
                cases.append({"run": run.__name__, "at": i, "config": config_to_json(
                    replayed.core.cfg), "snapshot": state, "events": events[i:],
                    "results": results[i:]})
            replayed.feed(e, t)
    json.dump(cases, sys.stdout, separators=(",", ":"))
    print()


if __name__ == "__main__":
    main()
