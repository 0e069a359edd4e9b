"""SIGTERM at the edges of a run (docs/reliability.md, case 6): during start-up, before the
broker connection is open (TCP accepted, the AMQP handshake pending or half done, a retry
backoff between attempts), and in the last moments after the exit code was decided. Nothing
was taken from any queue at start-up, so the exit status is 0, without a traceback; a
signal that comes after the exit code was decided does not change it.

The AMQP proxy plays the slow broker: it accepts TCP and forwards nothing (stall), or
holds one handshake method of the broker's (connection.start, .tune, .open-ok).
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import pytest

from .harness import C2B, AmqpProxy, Pipeline, Proc
from .harness.rabbit import queue_counts
from .steps import start_step, wait_until

pytestmark = pytest.mark.integration
CLEAN_EXIT = r"exiting with code 0 after [\d.]+s: "


def sigterm_once_logged(sidecar: Proc, pattern: str) -> None:
    """SIGTERM once the sidecar logged `pattern`; it exits 0, cleanly."""
    sidecar.wait_for_log(pattern, timeout=20)
    sidecar.terminate()
    expect_clean_exit(sidecar)


def expect_clean_exit(sidecar: Proc) -> None:
    sidecar.expect_exit(0, timeout=30)
    assert "Traceback" not in sidecar.logs, sidecar.tail()
    assert "AssertionError" not in sidecar.logs, sidecar.tail()
    sidecar.wait_for_log(r"\[shutdown-requested\] SIGTERM", timeout=1)
    sidecar.wait_for_log(CLEAN_EXIT, timeout=1)


class FullBacklog:
    """A port whose accept queue is full: the kernel drops a new connection's SYN, so the
    sidecar's connect() stays pending (TCP not even accepted)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self.listener.getsockname()[1]
        self.fillers = [socket.socket() for _ in range(3)]
        for filler in self.fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))

    def close(self) -> None:
        for sock in (*self.fillers, self.listener):
            sock.close()


def holding(method: str) -> Callable[[AmqpProxy], None]:
    return lambda proxy: proxy.hold(lambda f: f.name == method)


@pytest.mark.parametrize("slow_broker", [
    pytest.param(AmqpProxy.stall, id="tcp-accepted-nothing-answered"),
    pytest.param(holding("connection.start"), id="protocol-header-unanswered"),
    pytest.param(holding("connection.tune"), id="start-ok-unanswered"),
    pytest.param(holding("connection.open-ok"), id="open-unanswered"),
])
def test_sigterm_while_the_broker_connection_opens_exits_0(
        pipeline: Pipeline, amqp_proxy: AmqpProxy,
        slow_broker: Callable[[AmqpProxy], None]):
    pipeline.send_input({"untouched.txt": "never taken"})
    slow_broker(amqp_proxy)
    pipeline.broker_url = amqp_proxy.url()
    sidecar = pipeline.start_sidecar()
    if slow_broker is AmqpProxy.stall:
        assert wait_until(lambda: amqp_proxy.accepted >= 1, timeout=20), sidecar.tail()
    else:  # the broker's answer is parked in the proxy: the handshake is pending
        assert wait_until(lambda: amqp_proxy.held >= 1, timeout=20), sidecar.tail()
    sigterm_once_logged(sidecar, r"started: consuming")
    amqp_proxy.resume()
    assert queue_counts(pipeline.input_queue) == (1, 0)


def test_sigterm_while_tcp_connect_is_pending_exits_0(pipeline: Pipeline):
    backlog = FullBacklog()
    try:
        pipeline.broker_url = f"amqp://guest:guest@127.0.0.1:{backlog.port}/%2F"
        sidecar = pipeline.start_sidecar()
        sigterm_once_logged(sidecar, r"started: consuming")
    finally:
        backlog.close()


def test_sigterm_before_the_broker_connection_is_tried_exits_0(pipeline: Pipeline):
    """As soon as the HTTP endpoint is up (the first thing the run binds), before the
    sockets and the broker: the loop handles the signal once it runs."""
    sidecar = pipeline.start_sidecar()
    sigterm_once_logged(sidecar, r"http: /metrics")


def test_sigterm_during_the_backoff_between_connection_attempts_exits_0(
        pipeline: Pipeline, amqp_proxy: AmqpProxy):
    amqp_proxy.refuse_new(True)
    pipeline.broker_url = amqp_proxy.url()
    sidecar = pipeline.start_sidecar()
    sigterm_once_logged(sidecar, r"cannot connect to the broker at .*; next attempt in")


def test_sigterm_just_after_the_consumer_started_exits_0(
        pipeline: Pipeline, amqp_proxy: AmqpProxy):
    """No transformation yet: what the consumer received is given back."""
    for i in range(3):
        pipeline.send_input({f"early{i}.txt": "given back"})
    pipeline.broker_url = amqp_proxy.url()
    sidecar = pipeline.start_sidecar()
    amqp_proxy.wait_for("basic.consume", direction=C2B, timeout=20)
    sidecar.terminate()
    expect_clean_exit(sidecar)
    assert wait_until(lambda: queue_counts(pipeline.input_queue) == (3, 0))


# --- the very end ----------------------------------------------------------------------------


def signal_from_the_exit_line_on(sidecar: Proc, pattern: str) -> int:
    """SIGTERM as soon as the exit line is logged, then again and again until the process
    is gone: whatever the sidecar does after deciding its exit code (closing the broker,
    stopping threads, the interpreter's teardown) meets one. Returns the signals sent. The
    log is looked at every 2 ms: the sidecar may be gone within 50 ms of that line."""
    sidecar.wait_for_log(pattern, timeout=30, poll=0.002)
    sent = 0
    while sidecar.popen.poll() is None:
        try:
            sidecar.popen.send_signal(signal.SIGTERM)  # no-op once the child is reaped
            sent += 1
        except ProcessLookupError:
            break
        time.sleep(0.002)
    return sent


@pytest.mark.parametrize("attempt", range(3))
def test_sigterm_after_the_exit_code_is_decided_does_not_change_it(
        pipeline: Pipeline, attempt: int):
    """The upstream finishes and the queue is drained: exit 0. SIGTERMs from the final
    line (`exiting with code 0 ...`) until the process is gone leave it 0 (before the
    fix: status 143, -15 here). Repeated: each run is one try at the race."""
    pipeline.send_input({"last.txt": "the last fragment"})
    sidecar, trans = start_step(pipeline, "passthrough")
    pipeline.outputs(1)
    pipeline.finish_upstream()
    sent = signal_from_the_exit_line_on(sidecar, CLEAN_EXIT)
    assert sent >= 1
    sidecar.expect_exit(0, timeout=30)
    assert "Traceback" not in sidecar.logs
    trans.expect_exit(0, timeout=30)


def test_more_sigterms_after_the_first_do_not_change_the_exit_status(pipeline: Pipeline):
    """An impatient operator: SIGTERM, then more of them while it shuts down."""
    sidecar = pipeline.start_sidecar()
    pipeline.wait_for_sockets()
    sidecar.wait_for_log(r"started: consuming", timeout=20)
    sidecar.terminate()
    signal_from_the_exit_line_on(sidecar, CLEAN_EXIT)
    expect_clean_exit(sidecar)


def test_an_exit_1_stays_1_under_late_sigterms(pipeline: Pipeline, amqp_proxy: AmqpProxy):
    """The broker stays unreachable past its budget: exit 1, whatever signal comes after."""
    amqp_proxy.refuse_new(True)
    pipeline.broker_url = amqp_proxy.url()
    sidecar = pipeline.start_sidecar(SIDECAR_BROKER_RETRY_SECONDS="0.5")
    signal_from_the_exit_line_on(sidecar, r"exiting with code 1 after")
    sidecar.expect_exit(1, timeout=30)
    assert "Traceback" not in sidecar.logs
