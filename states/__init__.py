"""The lifecycles of the sidecar, defined once (as plain tables) and built with `transitions`.

Five machines:

* ``INPUT``: one per fragment consumed from RabbitMQ. Its last states reflect the outputs
  that gate its ack (§16.8): ``uploaded`` once every gating output is in S3, ``published``
  once every gating output's descriptor and lineage are confirmed by the broker.
* ``OUTPUT``: one per fragment the transformation sends back.
* ``STEP``: the sidecar process itself, from start-up through the shutdown chain (§12).
* ``INTAKE``: the consumer on the input queue, and the broker connection it lives on
  (docs/reliability.md, docs/operations.md).
* ``BOARD``: what the HTTP endpoint shows (/readyz, /debug/fragments): published soon after
  an event, and on a heartbeat when nothing happens (docs/operations.md).

States and triggers are named constants (``InputState.DISPATCHED``, ``StepEvent.STOP``;
see ``Names``) whose values are the strings journals, snapshots, logs and metrics hold, so
a misspelt name is an error instead of a state that silently never matches. The runner,
the replay tool and the diagram all use these same tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

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


class Names:
    """A table of names: the states, or the triggers, of one machine.

    Written as a class whose upper-case attributes are the names, each valued by its
    lower-case spelling (checked by ``names``, so that a misspelt value fails at import and
    a misspelt name is an AttributeError), and used as the one instance ``names`` makes of
    it. Iterating gives the values in the order written. Plain ``str`` values, not an Enum,
    and instance attributes, not class ones: the core compares states after every event,
    and an Enum member costs a slow look-up (~0.2 µs on Python 3.11) and a non-identity
    comparison, a class attribute about twice an instance one.
    """

    # The values in the order written. The lifecycles below read it directly: ``names``
    # makes each table an instance, but a type checker still sees the class (whose
    # ``__iter__`` needs an instance), so ``tuple(InputState)`` would not check.
    _values: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)


T = TypeVar("T", bound=Names)


def names(cls: type[T]) -> T:
    values = {k: v for k, v in vars(cls).items() if k.isupper()}
    wrong = [k for k, v in values.items() if v != k.lower()]
    if wrong:
        raise ValueError(f"{cls.__name__}: {wrong} must be spelt as their lower-case value")
    table = cls()
    vars(table).update(values, _values=tuple(values.values()))
    return table


@names
class InputState(Names):
    RECEIVED = "received"
    DOWNLOADED = "downloaded"
    DISPATCHED = "dispatched"
    PROCESSED = "processed"
    UPLOADED = "uploaded"
    PUBLISHED = "published"
    ACKED = "acked"
    DEAD_LETTERING = "dead_lettering"
    DEAD_LETTERED = "dead_lettered"
    REQUEUED = "requeued"


@names
class InputEvent(Names):
    DOWNLOAD_DONE = "download_done"
    DISPATCH = "dispatch"
    REDISPATCH = "redispatch"
    DONE_WITH = "done_with"
    RESUME = "resume"
    OUTPUTS_UPLOADED = "outputs_uploaded"
    OUTPUTS_PUBLISHED = "outputs_published"
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    DEAD_LETTER_CONFIRMED = "dead_letter_confirmed"
    GIVE_BACK = "give_back"


@names
class OutputState(Names):
    RECEIVED = "received"
    UPLOADED = "uploaded"
    PUBLISHED = "published"
    RECORDED = "recorded"
    FAILED = "failed"


@names
class OutputEvent(Names):
    UPLOAD_DONE = "upload_done"
    PUBLISH_CONFIRMED = "publish_confirmed"
    LINEAGE_CONFIRMED = "lineage_confirmed"
    FAIL = "fail"


@names
class StepState(Names):
    STARTING = "starting"
    CONSUMING = "consuming"
    DRAINING_QUEUE = "draining_queue"
    INPUT_ENDED = "input_ended"
    KILL_SENT = "kill_sent"
    TRANSFORMATION_DONE = "transformation_done"
    STOPPING = "stopping"
    EXITED = "exited"


@names
class StepEvent(Names):
    BROKER_READY = "broker_ready"
    UPSTREAM_FINISHED = "upstream_finished"
    CONSUMER_STOPPED = "consumer_stopped"
    SEND_KILL = "send_kill"
    TRANSFORMATION_FINISHED = "transformation_finished"
    STOP = "stop"
    EXIT = "exit"


@names
class IntakeState(Names):
    STARTING = "starting"
    CONSUMING = "consuming"
    PAUSING = "pausing"
    PAUSED = "paused"
    ENDING = "ending"
    ENDED = "ended"
    ADOPTING = "adopting"
    ADOPTION_ENDING = "adoption_ending"
    BROKER_DOWN = "broker_down"
    ENDED_BROKER_DOWN = "ended_broker_down"


@names
class IntakeEvent(Names):
    CONSUME = "consume"
    HOLD = "hold"
    PAUSE = "pause"
    CONSUMER_STOPPED = "consumer_stopped"
    CONSUMER_CANCELLED = "consumer_cancelled"
    END = "end"
    BROKER_LOST = "broker_lost"
    RECONNECTED = "reconnected"
    ADOPT = "adopt"
    STOP_ADOPTING = "stop_adopting"


@names
class BoardState(Names):
    STOPPED = "stopped"  # not started: nothing published, no timer
    CURRENT = "current"  # shows the last event; the heartbeat's publish is armed
    STALE = "stale"  # an event since the last publish; the publish soon after it is armed
    ENDED = "ended"


@names
class BoardEvent(Names):
    START = "start"
    EVENT = "event"
    PUBLISHED = "published"
    STOP = "stop"


In, InEv = InputState, InputEvent
_ALIVE = (In.RECEIVED, In.DOWNLOADED, In.DISPATCHED, In.PROCESSED, In.UPLOADED, In.PUBLISHED)

INPUT = Lifecycle(
    name="input",
    states=In._values,
    initial=In.RECEIVED,
    terminal=frozenset({In.ACKED, In.DEAD_LETTERED, In.REQUEUED}),
    transitions=(
        (InEv.DOWNLOAD_DONE, In.RECEIVED, In.DOWNLOADED),
        (InEv.DISPATCH, In.DOWNLOADED, In.DISPATCHED),
        # the transformation crashed and came back: it gets the fragment again
        (InEv.REDISPATCH, In.DISPATCHED, In.DISPATCHED),
        (InEv.DONE_WITH, In.DISPATCHED, In.PROCESSED),
        # a restarted sidecar: the killed one's journal says done_with came and every
        # output is in S3, so the redelivered input is not processed again (§16.15)
        (InEv.RESUME, In.RECEIVED, In.PROCESSED),
        (InEv.OUTPUTS_UPLOADED, In.PROCESSED, In.UPLOADED),
        (InEv.OUTPUTS_PUBLISHED, In.UPLOADED, In.PUBLISHED),
        (InEv.ACK, In.PUBLISHED, In.ACKED),
        # invalid body, object missing, an output refused: keep the input, with the reason
        (InEv.DEAD_LETTER, (In.RECEIVED, In.PROCESSED, In.UPLOADED, In.PUBLISHED),
         In.DEAD_LETTERING),
        (InEv.DEAD_LETTER_CONFIRMED, In.DEAD_LETTERING, In.DEAD_LETTERED),
        # shutdown, crash of the transformation, transient outage: back to the broker (by a
        # nack, or by the broker itself when the connection that delivered it was lost)
        (InEv.GIVE_BACK, (*_ALIVE, In.DEAD_LETTERING), In.REQUEUED),
    ),
)

Out, OutEv = OutputState, OutputEvent

OUTPUT = Lifecycle(
    name="output",
    states=Out._values,
    initial=Out.RECEIVED,
    terminal=frozenset({Out.RECORDED, Out.FAILED}),
    transitions=(
        (OutEv.UPLOAD_DONE, Out.RECEIVED, Out.UPLOADED),
        (OutEv.PUBLISH_CONFIRMED, Out.UPLOADED, Out.PUBLISHED),
        (OutEv.LINEAGE_CONFIRMED, Out.PUBLISHED, Out.RECORDED),
        (OutEv.FAIL, (Out.RECEIVED, Out.UPLOADED, Out.PUBLISHED), Out.FAILED),
    ),
)

S, SE = StepState, StepEvent

STEP = Lifecycle(
    name="step",
    states=S._values,
    initial=S.STARTING,
    terminal=frozenset({S.EXITED}),
    transitions=(
        (SE.BROKER_READY, S.STARTING, S.CONSUMING),
        (SE.UPSTREAM_FINISHED, S.CONSUMING, S.DRAINING_QUEUE),
        (SE.CONSUMER_STOPPED, (S.CONSUMING, S.DRAINING_QUEUE), S.INPUT_ENDED),
        (SE.SEND_KILL, S.INPUT_ENDED, S.KILL_SENT),
        (SE.TRANSFORMATION_FINISHED, S.KILL_SENT, S.TRANSFORMATION_DONE),
        # fatal error, SIGTERM, transformation lost or ended early: stop intake, drain
        # what can be finished, give the rest back
        (SE.STOP, (S.STARTING, S.CONSUMING, S.DRAINING_QUEUE, S.INPUT_ENDED, S.KILL_SENT,
                   S.TRANSFORMATION_DONE), S.STOPPING),
        (SE.EXIT, (S.TRANSFORMATION_DONE, S.STOPPING), S.EXITED),
    ),
)

# The intake: the consumer on the input queue and the connection it lives on. It replaces
# six flags (consuming, cancelling, pause_cancel, intake_ended, adopting, broker_up) and
# ``paused`` used as one (its tuple now only says why), whose combinations were its
# states. The connection is part of it, not a
# machine of its own: a loss ends the consumer and voids a cancel in flight, and what the
# intake does when the broker is back depends on where it was (start, resume, adopt). What
# stays outside are the *reasons* to pause (the transformation away, the volume nearly full):
# conditions that ``consume``/``hold``/``pause`` read, set by their own events, whatever the
# consumer is doing. No state is terminal: after the end, a lost connection can return
# deliveries that inputs still here must take back; STEP's ``exited`` ends everything.
C, CE = IntakeState, IntakeEvent
# The broker connection is up (the ready publishes are sent) in these intake states.
BROKER_UP = frozenset({C.CONSUMING, C.PAUSING, C.PAUSED, C.ENDING, C.ENDED, C.ADOPTING,
                       C.ADOPTION_ENDING})
# A basic.cancel is in flight: no basic.consume until its cancel-ok (ConsumerStopped),
# so that the consumer tag is never reused while the broker still knows it.
CANCELLING = frozenset({C.PAUSING, C.ENDING, C.ADOPTION_ENDING})

INTAKE = Lifecycle(
    name="intake",
    states=C._values,
    initial=C.STARTING,
    terminal=frozenset(),
    transitions=(
        # the broker is ready (first, or back after a loss); or a pause is over
        (CE.CONSUME, (C.STARTING, C.BROKER_DOWN, C.PAUSED), C.CONSUMING),
        # the broker is ready, but the transformation is away or the volume nearly full
        (CE.HOLD, (C.STARTING, C.BROKER_DOWN), C.PAUSED),
        (CE.PAUSE, C.CONSUMING, C.PAUSING),
        # the broker confirmed our basic.cancel
        (CE.CONSUMER_STOPPED, C.PAUSING, C.PAUSED),
        (CE.CONSUMER_STOPPED, (C.ENDING, C.ADOPTION_ENDING), C.ENDED),
        # the broker cancelled the consumer itself (the queue was deleted): the sidecar stops
        (CE.CONSUMER_CANCELLED, (C.CONSUMING, C.ADOPTING), C.ENDED),
        # the queue is drained, or the sidecar stops: no more intake, ever. A pause's
        # cancel in flight now ends the input.
        (CE.END, (C.CONSUMING, C.PAUSING), C.ENDING),
        (CE.END, C.PAUSED, C.ENDED),
        (CE.END, C.ADOPTING, C.ADOPTION_ENDING),
        (CE.END, (C.STARTING, C.BROKER_DOWN), C.ENDED_BROKER_DOWN),
        # every cancel in flight is void with the connection; the input's end is kept
        (CE.BROKER_LOST, (C.CONSUMING, C.PAUSING, C.PAUSED), C.BROKER_DOWN),
        (CE.BROKER_LOST, (C.ENDING, C.ENDED, C.ADOPTING, C.ADOPTION_ENDING),
         C.ENDED_BROKER_DOWN),
        # back after the input ended: consume again only to take back the deliveries the
        # loss returned to the queue while their inputs were still here
        (CE.RECONNECTED, C.ENDED_BROKER_DOWN, C.ENDED),
        (CE.ADOPT, C.ENDED_BROKER_DOWN, C.ADOPTING),
        # every void input taken back, or the queue is empty (another consumer has them)
        (CE.STOP_ADOPTING, C.ADOPTING, C.ADOPTION_ENDING),
    ),
)

B, BE = BoardState, BoardEvent
BOARD = Lifecycle(
    name="board",
    states=B._values,
    initial=B.STOPPED,
    terminal=frozenset({B.ENDED}),
    transitions=(
        (BE.START, B.STOPPED, B.CURRENT),
        # the first event after a publish arms the next one; later events wait for it
        (BE.EVENT, B.CURRENT, B.STALE),
        (BE.PUBLISHED, (B.CURRENT, B.STALE), B.CURRENT),
        (BE.STOP, (B.STOPPED, B.CURRENT, B.STALE), B.ENDED),
    ),
)

LIFECYCLES = (INPUT, OUTPUT, STEP, INTAKE, BOARD)
del In, InEv, Out, OutEv, S, SE, C, CE, B, BE  # short names for the tables above only
