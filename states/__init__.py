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

from transitions import Machine, MachineError


@dataclass(frozen=True)
class Lifecycle:
    name: str
    states: tuple[str, ...]
    initial: str
    terminal: frozenset[str]
    transitions: tuple[tuple[str, tuple[str, ...] | str, str], ...]  # trigger, sources, dest
    machine: Machine = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = [{"trigger": t, "source": list(s) if isinstance(s, tuple) else s, "dest": d}
                for t, s, d in self.transitions]
        # One shared Machine, no per-fragment add_model: a model is any object with a
        # ``state`` attribute and events are fired through the machine (about 8 µs each).
        machine = Machine(model=None, states=list(self.states), transitions=spec,
                          initial=self.initial, auto_transitions=False)
        object.__setattr__(self, "machine", machine)

    def fire(self, model: Any, trigger: str) -> str:
        """Advance ``model`` by ``trigger``; raise InvalidTransition if not allowed here."""
        event = self.machine.events.get(trigger)
        if event is None:
            raise InvalidTransition(f"{self.name} has no event {trigger!r}")
        try:
            event.trigger(model)
        except MachineError as err:
            raise InvalidTransition(
                f"{self.name}: {trigger!r} is not allowed from {model.state!r}") from err
        return model.state

    def allowed(self, state: str) -> list[str]:
        return [t for t, s, _ in self.transitions if state in (s if isinstance(s, tuple) else (s,))]


class InvalidTransition(Exception):
    pass


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
