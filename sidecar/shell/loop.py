"""The shell: one thread, one selector loop, wiring the adapters to the core.

Everything that touches the core runs on the loop thread: AMQP callbacks and socket I/O
arrive there directly; storage workers and the upstream checker post their events to a
queue the loop drains (one ``add_callback_threadsafe`` wake-up for all the events posted
while it was busy). Each event goes through ``Core.handle`` and the effects it returns
are performed in order. What needs only the state between loop turns is done once per turn
that handled events (``end_turn``): a busy loop turn delivers several events (confirms and
frames read together, a batch of posted ones).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from pika.adapters.select_connection import PollEvents

from states import INPUT, OUTPUT

from ..core import Core
from ..core import effects as fx
from ..core.events import Event, ShutdownRequested, Tick
from . import signals
from .config import Settings, core_config
from .hooks import NO_HOOKS, AdapterHooks, Observer
from .io.amqp import Broker
from .io.manager import UpstreamChecker
from .io.pika_turns import TurnLoop
from .io.sockets import SocketServer
from .io.storage import Storage
from .logs import log_effect

_FINAL = INPUT.terminal | OUTPUT.terminal  # the outcomes counted in ``totals``
log = logging.getLogger("sidecar")
CLOSE_TIMEOUT = 10.0
ERRORS_REMEMBERED = 32
DEAD_LETTERED_AT = "x-iterum-dead-lettered-at"  # header: UTC time of the dead letter


def _overrides(observer: Observer, method: str) -> bool:
    """Whether ``observer`` has its own ``method``, not the no-op default of hooks.Observer."""
    own = getattr(type(observer), method, None)
    return own is not None and own is not getattr(Observer, method)


class Runner:
    """The loop and its adapters around one core. ``observers`` (metrics, OpenLineage,
    operations, the journal: sidecar/shell/operate.py ``build`` declares them) see every
    event or the end of every loop turn, and frame the run; ``hooks`` are what the
    adapters report to (the metrics). Both are fixed at construction
    (sidecar/shell/hooks.py)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic, *,
                 core: Core | None = None, observers: Sequence[Observer] = (),
                 hooks: AdapterHooks = NO_HOOKS):
        self.s = settings
        self.clock = clock
        self.core = core if core is not None else Core(core_config(settings))
        self.ioloop = TurnLoop()
        self.sockets = SocketServer(self.ioloop, self.feed, settings.max_frame_bytes,
                                    settings.socket_mode, settings.peer_uid, hooks)
        self.broker = Broker(settings.mq_broker_url, self.ioloop, self.feed,
                             settings.mq_input_queue,
                             predeclare=(settings.mq_output_queue, settings.lineage_queue),
                             retry_seconds=settings.broker_retry_seconds,
                             tls_files=(settings.amqp_ca_file, settings.amqp_cert_file,
                                        settings.amqp_key_file), hooks=hooks)
        self.storage = Storage(settings, self.post, hooks)
        self.checker = UpstreamChecker(settings, self.post, hooks)
        # derived by a property that formats it: read once, not on every publish
        self._dead_letter_queue = settings.dead_letter_queue
        self.observers = tuple(observers)
        # called only where they override the no-op default: the fan-out on every event
        # (and turn) iterates these
        self._on_event = tuple(o for o in self.observers if _overrides(o, "__call__"))
        self._on_turn = tuple(o for o in self.observers if _overrides(o, "turn_ended"))
        self._turn_armed = False  # end_turn is due once the current loop turn's work is done
        self.totals: Counter[str] = Counter()
        self.exit_code: int | None = None
        self._queue: deque[Event] = deque()
        # Events posted by other threads, in the order posted; a wake-up is pending while
        # _posted_wake is set, so a post that finds it set only appends (fix 4 in
        # docs/performance-history.md: one pipe write and loop wake-up per batch, not per event).
        self._posted: deque[Event] = deque()
        self._posted_lock = threading.Lock()
        self._posted_wake = False
        self.posts = self.wakeups = 0  # counted for the benchmark and the tests
        self._event: Event | None = None  # the event being handled, named in the logs
        self._signals = signals.Delivery()  # installed by run()
        self._busy = False
        self._timer: Any = None
        self._timer_at: float | None = None  # the deadline the timer was armed for
        self._started = clock()
        # Recent errors the core logged (message -> code): an exit whose reason was already
        # logged refers to it instead of printing it a second time (§16.11: one error line).
        self._errors: OrderedDict[str, str] = OrderedDict()
        self._performers: dict[type, Callable[[Any], None]] = {
            fx.StartConsuming: lambda e: self.broker.start_consuming(e.prefetch),
            fx.StopConsuming: lambda e: self.broker.stop_consuming(),
            fx.InspectQueue: lambda e: self.broker.inspect_queue(),
            fx.Ack: lambda e: self.broker.ack(e.tag),
            fx.Nack: lambda e: self.broker.nack(e.tag, e.requeue),
            fx.Publish: self._publish,
            fx.DownloadFile: lambda e: self.storage.download(
                e, self.core.fragment_of(e.input_id)),
            fx.UploadFile: lambda e: self.storage.upload(e, self.core.fragment_of(e.output_id)),
            fx.SendFrame: lambda e: self.sockets.send(e.conn, e.payload),
            fx.CloseConnection: lambda e: self.sockets.close(e.conn),
            fx.DeleteFiles: self.storage.delete,
            fx.Log: self._log,
            fx.Exit: self._exit,
        }

    # --- running ---------------------------------------------------------------------

    def run(self) -> int:
        self._signals.install()  # before anything can be taken
        self.ioloop.add_handler(self._signals.fileno(), self._on_signals, PollEvents.READ)
        # In the order declared: the operations first (a taken HTTP port ends the start
        # cleanly), then the journal (which feeds a killed predecessor's Resume).
        for observer in self.observers:
            observer.start(self)
        if self.s.config_files:
            self.storage.fetch_config_files()
        self.sockets.listen(self.s.tts_path, "tts")
        self.sockets.listen(self.s.fts_path, "fts")
        self.broker.connect(self.clock())
        self.checker.start()
        log.info("started: consuming %s, prefetch %d, %d storage workers",
                 self.s.mq_input_queue, self.s.prefetch, self.s.storage_workers)
        self.end_turn()  # of what the observers' start fed (a restart's Resume)
        try:
            self.ioloop.start()
            self.end_turn()  # the loop may stop before the last turn's end ran
        finally:
            for observer in self.observers:
                observer.stop()
            self.ioloop.remove_handler(self._signals.fileno())
            self._signals.close()
        self.ioloop.close()
        return 1 if self.exit_code is None else self.exit_code

    # --- what observers may use (hooks.Loop) ---------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        return self.ioloop.call_later(delay, callback)

    def remove_timeout(self, handle: object) -> None:
        self.ioloop.remove_timeout(cast(Any, handle))  # the handle call_later gave out

    def post(self, event: Event) -> None:
        """Thread-safe: hand an event from a worker thread to the loop."""
        with self._posted_lock:
            self._posted.append(event)
            self.posts += 1
            if self._posted_wake:
                return  # the pending wake-up will take it, in order
            self._posted_wake = True
        self.ioloop.add_callback_threadsafe(self._take_posted)

    def _take_posted(self) -> None:
        """On the loop: feed every event posted so far, in order. Events posted meanwhile
        wait for one more wake-up, so sockets and AMQP are served between batches."""
        with self._posted_lock:
            batch, self._posted = self._posted, deque()
            self.wakeups += 1
        for event in batch:
            self.feed(event)
        with self._posted_lock:
            if not self._posted:
                self._posted_wake = False
                return
        self.ioloop.add_callback_threadsafe(self._take_posted)

    def feed(self, event: Event) -> None:
        """Run the core on one event (on the loop thread), then perform its effects."""
        if self._busy:  # an effect caused an event: handle it after the current one
            self._queue.append(event)
            return
        self._busy = True
        queue, current = self._queue, event  # the queue is for events effects cause (rare)
        if queue:  # left there by an exception: they go first
            queue.append(event)
            current = queue.popleft()
        try:
            while True:
                self._event = current
                now = self.clock()
                effects = self.core.handle(current, now)
                transitions = self.core.transitions
                for observer in self._on_event:
                    observer(current, now, effects, transitions)
                for t in transitions:
                    if t.dest in _FINAL:
                        self.totals[f"{t.machine} {t.dest}"] += 1
                performers = self._performers
                for effect in effects:
                    performers[type(effect)](effect)
                if not queue:
                    break
                current = queue.popleft()
        finally:
            self._busy = False
        if not self._turn_armed:
            self._turn_armed = True
            self.ioloop.at_turn_end(self.end_turn)  # after this turn's handlers and timers

    def end_turn(self) -> None:
        """Once per loop turn that handled events, after them all: hand the transfers they
        asked for to the pool (one work item per fragment and direction), keep the timer
        for the core's next deadline, and let the observers do their per-turn work."""
        if not self._turn_armed:
            return  # ended already (run() ends the turns fed outside the loop itself)
        self._turn_armed = False
        self.storage.flush()
        self._reschedule()
        for observer in self._on_turn:
            observer.turn_ended()

    def _reschedule(self) -> None:
        """Keep a loop timer for the core's next deadline. A deadline that moved later
        (the stuck watch's moves on nearly every event: its oldest fragment changed state)
        or went away keeps the armed timer: when it fires, ``_tick`` arms the next one
        instead of feeding a Tick, so a busy loop does not cancel and re-make a timer per
        event, and a Tick is still fed only once a deadline is due."""
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            assert self._timer_at is not None
            if deadline is None or deadline > self._timer_at:
                return  # the armed timer fires first
            self.ioloop.remove_timeout(self._timer)
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.ioloop.call_later(max(0.0, deadline - self.clock()), self._tick)

    def _publish(self, e: fx.Publish) -> None:
        headers = e.headers
        if e.queue == self._dead_letter_queue:
            # The core has no wall clock; the time a dead letter was made is an I/O fact
            # (shown by `iterum-sidecar dead-letters list`).
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            headers = (*headers, (DEAD_LETTERED_AT, stamp))
        self.broker.publish(e.publish_id, e.queue, e.body, e.message_id, headers)

    def _tick(self) -> None:
        armed_for, due = self._timer_at, self.core.next_deadline()  # only feed changes it
        self._timer = self._timer_at = None
        if due != armed_for and (due is None or due > self.clock()):
            self._reschedule()  # armed for a deadline that moved later (or went): not due
            return
        self.feed(Tick())

    def _on_signals(self, _fd: int, _events: int) -> None:
        for name in self._signals.received():
            # one that came just before the exit code was decided changes nothing either
            if self.exit_code is None:
                self.feed(ShutdownRequested(name))

    # --- the end ---------------------------------------------------------------------

    def _log(self, e: fx.Log) -> None:
        if e.level == "error":
            self._errors[e.message] = e.code
            self._errors.move_to_end(e.message)
            if len(self._errors) > ERRORS_REMEMBERED:
                self._errors.popitem(last=False)
        event = "" if self._event is None else type(self._event).__name__
        log_effect(e, self.core.state_of(e.fragment), event)

    def _exit(self, e: fx.Exit) -> None:
        if self._signals.installed:  # decided: no signal changes it from now on
            signals.hold_exit_code()
        self.exit_code = e.code
        summary = ", ".join(f"{n} {k}" for k, n in sorted(self.totals.items())) or "no fragments"
        logged = self._errors.get(e.reason)
        reason = f"[{logged}] (the error above)" if logged else e.reason
        level = logging.INFO if e.code == 0 or logged else logging.ERROR
        log.log(level, "exiting with code %d after %.1fs: %s (%s)", e.code,
                self.clock() - self._started, reason, summary)
        for observer in self.observers:
            observer.exiting()  # e.g. the journal flushes
        self.checker.stop()
        self.sockets.shutdown()
        self.storage.shutdown()
        self.ioloop.call_later(CLOSE_TIMEOUT, self.ioloop.stop)
        self.broker.close(on_closed=self.ioloop.stop)

