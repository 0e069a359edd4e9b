"""The lifecycles of the sidecar, defined once (as plain tables) and built with `transitions`.

Three machines:

* ``INPUT``: one per fragment consumed from RabbitMQ. Its last states reflect the outputs
  that gate its ack (§16.8): ``uploaded`` once every gating output is in S3, ``published``
  once every gating output's descriptor and lineage are confirmed by the broker.
* ``OUTPUT``: one per fragment the transformation sends back.
* ``STEP``: the sidecar process itself, from start-up through the shutdown chain (§12).

The runner, the replay tool and the diagram all use these same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transitions import Machine


@dataclass(frozen=True)
class Lifecycle:
    name: str
    states: tuple[str, ...]
    initial: str
    terminal: frozenset[str]
    transitions: tuple[tuple[str, tuple[str, ...] | str, str], ...]  # trigger, sources, dest
    machine: Machine = field(init=False, repr=False, compare=False)
    # (state, trigger) -> dest, read off ``machine``: what ``fire`` looks up
    next_state: dict[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = [{"trigger": t, "source": list(s) if isinstance(s, tuple) else s, "dest": d}
                for t, s, d in self.transitions]
        # One shared Machine, no per-fragment add_model: a model is any object with a
        # ``state`` attribute. It is the definition (and draws the diagram); firing goes
        # through a dict read off it, since Event.trigger costs about 7 µs a transition
        # and a look-up 0.1 µs, nine times per fragment on the loop thread.
        machine = Machine(model=None, states=list(self.states), transitions=spec,
                          initial=self.initial, auto_transitions=False)
        object.__setattr__(self, "machine", machine)
        object.__setattr__(self, "next_state", direct_table(machine))

    def fire(self, model: Any, trigger: str) -> str:
        """Advance ``model`` by ``trigger``; raise InvalidTransition if not allowed here."""
        dest = self.next_state.get((model.state, trigger))
        if dest is None:
            if trigger not in self.machine.events:
                raise InvalidTransition(f"{self.name} has no event {trigger!r}")
            raise InvalidTransition(
                f"{self.name}: {trigger!r} is not allowed from {model.state!r}")
        model.state = dest
        return dest

    def allowed(self, state: str) -> list[str]:
        return [t for t, s, _ in self.transitions if state in (s if isinstance(s, tuple) else (s,))]


class InvalidTransition(Exception):
    pass


def direct_table(machine: Machine) -> dict[tuple[str, str], str]:
    """``{(source, trigger): dest}`` for a machine whose transitions only change the state.

    A callback or a condition would be skipped by a plain look-up, so a machine with any is
    refused here, when the lifecycles are built, rather than silently run differently.
    """
    hooks = [machine.prepare_event, machine.before_state_change, machine.after_state_change,
             machine.finalize_event, machine.on_exception]
    hooks += [h for st in machine.states.values() for h in (st.on_enter, st.on_exit)]
    if any(hooks):
        raise ValueError(f"{machine.name or 'machine'}: state or machine callbacks are not "
                         "supported by Lifecycle.fire")
    table: dict[tuple[str, str], str] = {}
    for trigger, event in machine.events.items():
        for source, candidates in event.transitions.items():
            t = candidates[0]
            if (len(candidates) > 1 or t.dest is None or t.conditions or t.prepare
                    or t.before or t.after):
                raise ValueError(f"{trigger!r} from {source!r}: only one unconditional "
                                 "transition without callbacks is supported")
            table[(source, trigger)] = t.dest
    return table


_ALIVE = ("received", "downloaded", "dispatched", "processed", "uploaded", "published")

INPUT = Lifecycle(
    name="input",
    states=(*_ALIVE, "acked", "dead_lettering", "dead_lettered", "requeued"),
    initial="received",
    terminal=frozenset({"acked", "dead_lettered", "requeued"}),
    transitions=(
        ("download_done", "received", "downloaded"),
        ("dispatch", "downloaded", "dispatched"),
        # the transformation crashed and came back: it gets the fragment again
        ("redispatch", "dispatched", "dispatched"),
        ("done_with", "dispatched", "processed"),
        # a restarted sidecar: the killed one's journal says done_with came and every
        # output is in S3, so the redelivered input is not processed again (§16.15)
        ("resume", "received", "processed"),
        ("outputs_uploaded", "processed", "uploaded"),
        ("outputs_published", "uploaded", "published"),
        ("ack", "published", "acked"),
        # invalid body, object missing, an output refused: keep the input, with the reason
        ("dead_letter", ("received", "processed", "uploaded", "published"), "dead_lettering"),
        ("dead_letter_confirmed", "dead_lettering", "dead_lettered"),
        # shutdown, crash of the transformation, transient outage: back to the broker (by a
        # nack, or by the broker itself when the connection that delivered it was lost)
        ("give_back", (*_ALIVE, "dead_lettering"), "requeued"),
    ),
)

OUTPUT = Lifecycle(
    name="output",
    states=("received", "uploaded", "published", "recorded", "failed"),
    initial="received",
    terminal=frozenset({"recorded", "failed"}),
    transitions=(
        ("upload_done", "received", "uploaded"),
        ("publish_confirmed", "uploaded", "published"),
        ("lineage_confirmed", "published", "recorded"),
        ("fail", ("received", "uploaded", "published"), "failed"),
    ),
)

STEP = Lifecycle(
    name="step",
    states=("starting", "consuming", "draining_queue", "input_ended", "kill_sent",
            "transformation_done", "stopping", "exited"),
    initial="starting",
    terminal=frozenset({"exited"}),
    transitions=(
        ("broker_ready", "starting", "consuming"),
        ("upstream_finished", "consuming", "draining_queue"),
        ("consumer_stopped", ("consuming", "draining_queue"), "input_ended"),
        ("send_kill", "input_ended", "kill_sent"),
        ("transformation_finished", "kill_sent", "transformation_done"),
        # fatal error, SIGTERM, transformation lost or ended early: stop intake, drain
        # what can be finished, give the rest back
        ("stop", ("starting", "consuming", "draining_queue", "input_ended", "kill_sent",
                  "transformation_done"), "stopping"),
        ("exit", ("transformation_done", "stopping"), "exited"),
    ),
)

LIFECYCLES = (INPUT, OUTPUT, STEP)
