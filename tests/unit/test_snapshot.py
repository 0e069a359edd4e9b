"""Core.snapshot() / Core.restore(): a restored core continues exactly where the original was
(the journal's checkpoints, and later a restarted sidecar, depend on it)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_core_replay import busy_run
from test_core_resume import restart_and_loss_run
from unit_driver import Driver, fid, make_config

from sidecar.core import Core, Input, Output, codec
from sidecar.core import events as ev
from sidecar.core.output_ids import rebuild_index_keys
from sidecar.core.snapshot import (
    FORMAT,
    NOT_STATE,
    SnapshotError,
    config_from_json,
    snapshot,
    upgrade,
)
from sidecar.shell.journal import load
from sidecar.tools.replay import Replayer
from states import INTAKE

A, B = fid("a"), fid("b")


def _json(data: dict) -> dict:
    return json.loads(json.dumps(data))


def test_the_snapshot_covers_every_attribute_of_the_core() -> None:
    """A new attribute of the core's components must be added to sidecar/core/snapshot.py
    (or to NOT_STATE); the core itself holds nothing but its components and its rules."""
    core = Core(make_config())
    assert set(vars(core)) == {"parts", "_handlers"}
    # a component's model (the step's, the intake's) is snapshotted under its own name
    attributes = {f.name if a == "model" else a.lstrip("_")
                  for f in dataclasses.fields(core.parts) if f.name != "cfg"
                  for a in vars(getattr(core.parts, f.name))}
    attributes -= {a.lstrip("_") for a in NOT_STATE}
    assert attributes == set(snapshot(core)) - {"format"}


def test_the_snapshot_covers_every_field_of_the_models() -> None:
    drv = Driver()
    drv.start()
    drv.connect()
    drv.ready_input(1, A)
    drv.output([A])
    state = snapshot(drv.core)
    [inp] = state["inputs"]
    [out] = state["outputs"]
    # an input's fragment_id is its desc's, kept beside it: not state of its own
    assert set(inp) == {f.name for f in dataclasses.fields(Input)} - {"fragment_id"}
    assert set(out) == {f.name for f in dataclasses.fields(Output)}
    [restored] = Core.restore(drv.core.cfg, _json(state)).inputs.values()
    assert restored.fragment_id == inp["desc"]["fragment_id"] == A


@pytest.mark.parametrize("run", [busy_run, restart_and_loss_run])
def test_restoring_at_any_event_of_a_busy_run_continues_identically(run) -> None:
    drv = run()
    cfg = make_config()
    core = Core(cfg)
    for i, (event, at, _, _) in enumerate(drv.journal):
        state = snapshot(core)
        assert _json(state) == state, "a snapshot is plain JSON data"
        restored = Core.restore(cfg, _json(state))
        assert snapshot(restored) == state
        assert restored.index_keys == core.index_keys
        for later, t, out, transitions in drv.journal[i:]:
            assert restored.handle(later, t) == out, f"restored at {i}, differs at {later}"
            assert restored.transitions == transitions
        core.handle(event, at)
    assert core.step.state == "exited"


def test_a_restored_core_keeps_the_orders_the_core_depends_on() -> None:
    drv = Driver()
    drv.start()
    drv.connect()
    for tag, ch in enumerate("cab", start=1):
        drv.ready_input(tag, fid(ch))
    drv.output([fid("b")])
    drv.output([fid("a"), fid("c")])
    drv.output([fid("c")])
    drv.disconnect()  # a grace deadline
    drv.feed(ev.ShutdownRequested("SIGTERM"))  # and a shutdown deadline after it
    restored = Core.restore(drv.core.cfg, _json(drv.core.snapshot()))
    assert list(restored.inputs) == list(drv.core.inputs)
    assert list(restored.outputs) == list(drv.core.outputs)
    assert list(restored.output_index.items()) == list(drv.core.output_index.items())
    assert list(restored.deadlines.items()) == list(drv.core.deadlines.items())
    assert [m.history for m in restored.inputs.values()] == [
        m.history for m in drv.core.inputs.values()]


def test_index_keys_are_an_index_of_the_output_index() -> None:
    drv = busy_run()
    assert rebuild_index_keys(drv.core.output_index) == drv.core.index_keys


@pytest.mark.parametrize("damage", [lambda s: s.update(format=99), lambda s: s.pop("inputs"),
                                    lambda s: s.update(publishes=[[1, {"kind": "x"}]]),
                                    lambda s: s.update(intake="consumng")])
def test_a_damaged_snapshot_is_refused(damage) -> None:
    drv = Driver()
    drv.start()
    drv.connect()
    drv.ready_input(1, A)
    drv.record(drv.output([A]))
    state = _json(drv.core.snapshot())
    damage(state)
    with pytest.raises(SnapshotError):
        Core.restore(drv.core.cfg, state)


FORMAT3 = Path(__file__).resolve().parent / "snapshots" / "format3.json"


@pytest.mark.parametrize("case", json.loads(FORMAT3.read_text()),
                         ids=lambda c: f"{c['run']}@{c['at']}")
def test_a_format_3_snapshot_continues_as_the_core_that_wrote_it(case: dict) -> None:
    """Checkpoints written before the intake machine (its six flags; recorded by the core
    of 6d5ccdc with snapshots/record_format3.py) restore into the same intake state: fed
    the events that followed, today's core does what that core did."""
    old = case["snapshot"]
    assert old["format"] == 3 and "intake" not in old
    core = Core.restore(config_from_json(case["config"]), old)
    assert snapshot(core)["format"] == FORMAT
    for (event, t), (effects, transitions) in zip(case["events"], case["results"],
                                                  strict=True):
        out = core.handle(codec.decode(event), t)
        assert [codec.encode_effect(e) for e in out] == effects, f"differs at {event}"
        assert [codec.encode_transition(x) for x in core.transitions] == transitions


def test_the_format_3_cases_reach_every_intake_state() -> None:
    cases = json.loads(FORMAT3.read_text())
    reached = {upgrade(c["snapshot"])["intake"] for c in cases}
    assert reached == set(INTAKE.states)


@pytest.mark.parametrize("flags", [
    dict(consuming=True, cancelling=False, adopting=False, intake_ended=False),
    dict(consuming=False, cancelling=True, adopting=True, intake_ended=True),
])
def test_a_format_3_snapshot_missing_a_flag_is_refused(flags: dict) -> None:
    state = _json(snapshot(Core(make_config())))
    del state["intake"]
    state.update(format=3, **flags)  # pause_cancel and broker_up missing
    with pytest.raises(SnapshotError, match="invalid snapshot: KeyError"):
        Core.restore(make_config(), state)


@pytest.mark.parametrize("run", ["paused_run", "adopting_run"])
def test_a_journal_of_format_3_checkpoints_replays_across_its_segments(run: str) -> None:
    """Replay compares each later segment's checkpoint with the state it reached: a
    checkpoint written before the intake machine is read in today's format."""
    journal = load(str(FORMAT3.parent / "journals" / run))
    assert len(journal.segments) > 2
    assert {s.checkpoint["format"] for s in journal.segments} == {3}
    later = {upgrade(s.checkpoint)["intake"] for s in journal.segments[1:]}
    assert later - {"consuming"}, "a checkpoint in another intake state"
    replayer = Replayer(journal)
    assert replayer.run(), replayer.divergence and replayer.divergence.describe()
    assert replayer.core.step.state == "exited"
