"""The components of the core, wired once: what every rule module works on.

Each component owns its state and shows it through read-only properties; the rules (the
functions in broker, inputs, outputs, transformation, stream, resume) decide what happens on
each event by calling their methods. ``Core`` builds one ``Parts`` and maps events to rules.

======================  =====================================================================
``fx`` (Emitter)        the clock of the call, the effects and transitions it makes, log counts
``fragments``           inputs and outputs in flight, by serial and by id; state counts;
                        serials; firing their transitions; the stuck watch
``ids`` (OutputIds)     deterministic output ids (§16.15)
``publisher``           publishes awaiting a confirm; resent after a reconnect
``intake``              states.INTAKE (the consumer, the broker connection), pause reasons,
                        free volume space; the consumer effects
``link``                the transformation's connections, the ready queue, the kill, orphaned
``restart``             what a killed predecessor on this volume had done
``step``                states.STEP, the deadlines, the exit code and reason, bucket dirs
======================  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from .emitter import Emitter
from .fragments import Fragments
from .intake import IntakeControl
from .link import Link
from .models import CoreConfig, PendingPublish
from .output_ids import OutputIds
from .publisher import Publisher
from .restart import Restart
from .step import Step


@dataclass(frozen=True, slots=True)
class Parts:
    cfg: CoreConfig
    fx: Emitter
    fragments: Fragments
    ids: OutputIds
    publisher: Publisher
    intake: IntakeControl
    link: Link
    restart: Restart
    step: Step

    @classmethod
    def build(cls, cfg: CoreConfig) -> Parts:
        fx = Emitter()
        return cls(cfg, fx, Fragments(fx, cfg.stuck_after), OutputIds(cfg.step), Publisher(fx),
                   IntakeControl(cfg, fx), Link(), Restart(), Step(fx))

    def publish(self, pending: PendingPublish) -> None:
        """Register a publish: sent now if the broker is there, else when it is back."""
        self.publisher.publish(pending, self.intake.broker_up)
