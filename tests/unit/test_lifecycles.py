"""``Lifecycle.fire`` looks destinations up in a dict read off the ``transitions`` Machine:
both must agree on every (state, trigger), and a Machine the dict cannot follow is refused."""

from __future__ import annotations

import pytest
from transitions import Machine, MachineError

from states import LIFECYCLES, InvalidTransition, Lifecycle, direct_table


class Model:
    def __init__(self, state: str):
        self.state = state


def by_machine(lc: Lifecycle, state: str, trigger: str) -> str | None:
    """The destination the Machine itself gives, or None where it refuses."""
    model = Model(state)
    try:
        lc.machine.events[trigger].trigger(model)
    except MachineError:
        return None
    return model.state


def by_fire(lc: Lifecycle, state: str, trigger: str) -> str | None:
    model = Model(state)
    try:
        dest = lc.fire(model, trigger)
    except InvalidTransition:
        assert model.state == state  # a refusal leaves the model alone
        return None
    assert model.state == dest
    return dest


@pytest.mark.parametrize("lc", LIFECYCLES, ids=lambda lc: lc.name)
def test_fire_and_the_machine_agree_on_every_state_and_trigger(lc: Lifecycle) -> None:
    allowed = 0
    for state in lc.states:
        for trigger in lc.machine.events:
            expected = by_machine(lc, state, trigger)
            assert by_fire(lc, state, trigger) == expected, (state, trigger)
            allowed += expected is not None
    # every (source, trigger) of the table was seen allowed, once
    assert allowed == sum(len(s) if isinstance(s, tuple) else 1 for _, s, _ in lc.transitions)


@pytest.mark.parametrize("lc", LIFECYCLES, ids=lambda lc: lc.name)
def test_refusals_say_why(lc: Lifecycle) -> None:
    with pytest.raises(InvalidTransition, match="has no event 'no_such_trigger'"):
        lc.fire(Model(lc.initial), "no_such_trigger")
    trigger = lc.transitions[0][0]
    # a terminal state, else (the intake has none) one the first trigger does not leave
    final = sorted(lc.terminal)[0] if lc.terminal else next(
        s for s in lc.states if trigger not in lc.allowed(s))
    with pytest.raises(InvalidTransition, match=f"{trigger!r} is not allowed from {final!r}"):
        lc.fire(Model(final), trigger)


@pytest.mark.parametrize("extra", [
    {"conditions": "ok"}, {"unless": "ok"}, {"before": "log"}, {"after": "log"},
    {"prepare": "log"},
])
def test_a_transition_with_a_condition_or_callback_is_refused(extra: dict) -> None:
    machine = Machine(model=None, states=["a", "b"], initial="a", auto_transitions=False,
                      transitions=[{"trigger": "go", "source": "a", "dest": "b", **extra}])
    with pytest.raises(ValueError, match="'go' from 'a'"):
        direct_table(machine)


@pytest.mark.parametrize("extra", [
    {"after_state_change": "log"}, {"before_state_change": "log"},
    {"prepare_event": "log"}, {"finalize_event": "log"},
])
def test_machine_callbacks_are_refused(extra: dict) -> None:
    machine = Machine(model=None, states=["a", "b"], initial="a", auto_transitions=False,
                      transitions=[["go", "a", "b"]], **extra)
    with pytest.raises(ValueError, match="callbacks"):
        direct_table(machine)


def test_state_callbacks_and_competing_transitions_are_refused() -> None:
    entering = Machine(model=None, states=["a", {"name": "b", "on_enter": "log"}],
                       initial="a", auto_transitions=False, transitions=[["go", "a", "b"]])
    with pytest.raises(ValueError, match="callbacks"):
        direct_table(entering)
    twice = Machine(model=None, states=["a", "b", "c"], initial="a", auto_transitions=False,
                    transitions=[["go", "a", "b"], ["go", "a", "c"]])
    with pytest.raises(ValueError, match="'go' from 'a'"):
        direct_table(twice)
    plain = Machine(model=None, states=["a", "b"], initial="a", auto_transitions=False,
                    transitions=[["go", "a", "b"], ["back", "b", "a"]])
    assert direct_table(plain) == {("a", "go"): "b", ("b", "back"): "a"}
