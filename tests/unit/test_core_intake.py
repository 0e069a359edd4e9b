"""The intake machine (states.INTAKE): the core fires only transitions of its table, every
row of the table is one the core fires, and the rarer paths (the end before the broker is
ready, a cancel or a loss during the adoption) go where the table says."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from unit_driver import Driver, fid, log_codes, of

import states
from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.core.models import Intake
from states import INTAKE, IntakeEvent, IntakeState, InvalidTransition

ROOT = Path(__file__).resolve().parents[2]
A, B = fid("a"), fid("b")
LOST = ev.BrokerLost("connection reset")
NAME_TABLES = {n: getattr(states, n) for n in dir(states)
               if isinstance(getattr(states, n), states.Names)}


def name_references(*folders: str) -> list[tuple[str, ast.Attribute, type]]:
    """``(where, node, table)`` for every ``InputState.X``-like reference (aliases too)."""
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            tables = dict(NAME_TABLES)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "states":
                    tables.update({a.asname: NAME_TABLES[a.name] for a in node.names
                                   if a.asname and a.name in NAME_TABLES})
            found += [(f"{path.relative_to(ROOT)}:{node.lineno}", node, tables[node.value.id])
                      for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id in tables and node.attr.isupper()]
    return found


def test_every_state_or_trigger_named_in_the_code_exists() -> None:
    """A misspelt ``IntakeState.CONSUMNG`` is found without running the line."""
    refs = name_references("sidecar", "states")
    assert len(refs) > 100
    assert [f"{where} {node.attr}" for where, node, table in refs
            if node.attr not in vars(table)] == []


def fired_in_the_core() -> set[str]:
    """The triggers given to the intake's ``fire`` in sidecar/core (by position in the
    source; the lifecycles' ``fire`` calls take a lifecycle first, never an IntakeEvent)."""
    calls = {(f"{p.relative_to(ROOT)}:{node.lineno}", node.args[0].col_offset)
             for p in (ROOT / "sidecar" / "core").glob("*.py")
             for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == "fire" and node.args}
    fired = {getattr(table, node.attr) for where, node, table in name_references("sidecar/core")
             if table is IntakeEvent and (where, node.col_offset) in calls}
    assert len(fired) <= len(calls)
    return fired


def test_the_core_fires_every_trigger_of_the_table_and_no_other() -> None:
    assert fired_in_the_core() == set(INTAKE.machine.events)


def test_a_transition_not_in_the_table_raises() -> None:
    model = Intake(IntakeState.ENDED)
    with pytest.raises(InvalidTransition, match="'consume' is not allowed from 'ended'"):
        INTAKE.fire(model, IntakeEvent.CONSUME)
    assert model.state == IntakeState.ENDED


def test_the_core_logs_a_refused_intake_transition_and_goes_on(drv: Driver) -> None:
    drv.start()
    drv.core.parts.intake.fire(IntakeEvent.ADOPT)  # only after the input ended, broker away
    log = drv.core.parts.fx.out[-1]
    assert (log.level, log.code) == ("error", "invalid-transition")
    assert drv.core.intake.state == IntakeState.CONSUMING


# --- the paths the other tests do not take --------------------------------------------------


def intake(drv: Driver) -> str:
    return drv.core.intake.state


def test_the_end_before_the_broker_is_ready(drv: Driver) -> None:
    out = drv.feed(ev.ShutdownRequested("SIGTERM"))
    assert intake(drv) == IntakeState.ENDED_BROKER_DOWN
    assert of(out, fx.StopConsuming) == [] and of(out, fx.Exit)


def test_back_after_the_end_with_nothing_to_take_back(drv: Driver) -> None:
    drv.start()
    drv.connect()
    drv.end_input()  # no input: the kill is sent
    drv.output([A])  # after the kill, before complete: holds no input
    drv.feed(LOST)
    out = drv.start()
    assert intake(drv) == IntakeState.ENDED
    assert of(out, fx.StartConsuming) == []


def adopting(drv: Driver) -> Driver:
    drv.start()
    drv.connect()
    drv.ready_input(7, A)
    drv.ready_input(8, B)
    drv.end_input()
    drv.feed(LOST)
    drv.start()
    assert intake(drv) == IntakeState.ADOPTING
    return drv


def test_the_broker_cancels_the_consumer_during_the_adoption(drv: Driver) -> None:
    out = adopting(drv).feed(ev.ConsumerCancelledByBroker())
    assert intake(drv) == IntakeState.ENDED
    assert "consumer-cancelled" in log_codes(out) and of(out, fx.StopConsuming) == []


def test_a_sigterm_during_the_adoption_cancels_it(drv: Driver) -> None:
    out = adopting(drv).feed(ev.ShutdownRequested("SIGTERM"))
    assert intake(drv) == IntakeState.ADOPTION_ENDING
    assert of(out, fx.StopConsuming) == [fx.StopConsuming()]
    drv.feed(ev.ConsumerStopped())
    assert intake(drv) == IntakeState.ENDED


def test_a_loss_while_the_adoption_is_cancelled(drv: Driver) -> None:
    adopting(drv).feed(ev.QueueInspected(0))
    assert intake(drv) == IntakeState.ADOPTION_ENDING
    drv.feed(LOST)
    assert intake(drv) == IntakeState.ENDED_BROKER_DOWN
    out = drv.start()  # the void inputs are still here: adopt again
    assert intake(drv) == IntakeState.ADOPTING
    assert of(out, fx.StartConsuming, fx.InspectQueue) == [fx.StartConsuming(4),
                                                           fx.InspectQueue()]
    assert "invalid-transition" not in log_codes(drv.effects)


@pytest.mark.parametrize("state", INTAKE.states)
def test_the_views_for_observers_follow_the_state(drv: Driver, state: str) -> None:
    drv.core.intake.state = state
    assert drv.core.broker_up == (state in states.BROKER_UP)
    assert drv.core.consuming == (state in ("consuming", "adopting"))
    assert drv.core.cancelling == (state in ("pausing", "ending", "adoption_ending"))
