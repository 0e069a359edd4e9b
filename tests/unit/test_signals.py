"""SIGTERM from the start of a run to the process's end (sidecar/shell/signals.py): before the
loop a signal exits 0; the loop receives it as a byte on a socket (never by a handler that
raises or takes a lock); once the exit code is decided it is held against any signal. Each
case runs in a child interpreter (signal dispositions are the process's)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_a_decided_exit_code_stands_against_a_late_sigterm() -> None:
    done = run("""
        import os, signal, sys
        from sidecar.shell import signals
        signals.handle(lambda *_: sys.exit(99))  # a handler that would change it
        signals.hold_exit_code()  # the exit code is decided: 3
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        sys.exit(3)
    """)
    assert done.returncode == 3, done.stderr


def test_a_sigterm_before_the_loop_exits_0_even_inside_a_finaliser() -> None:
    """A handler's exception raised inside a __del__ would be printed and dropped, and the
    start-up would go on; the quiet exit cannot be dropped."""
    done = run("""
        import os, signal, time
        from sidecar.shell import signals
        signals.handle(signals.quiet_exit)

        class Finalised:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in here

        Finalised()
        print("went on")
        time.sleep(10)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "", (done.stdout, done.stderr)


def test_the_loop_receives_a_signal_that_came_while_it_held_its_waking_lock() -> None:
    """The loop thread holds pika's non-reentrant waking lock while it wakes itself; a
    handler that woke the loop deadlocked there (CI, 2026-12-08). The delivery's socket
    takes no lock: the loop reads SIGTERM, then SIGINT, on its next turn."""
    done = run("""
        import os, signal
        from pika.adapters.select_connection import PollEvents
        from sidecar.shell import signals
        from sidecar.shell.io.pika_turns import TurnLoop

        loop, delivery, got = TurnLoop(), signals.Delivery(), []
        delivery.install()

        def readable(_fd, _events):
            got.extend(delivery.received())
            loop.stop()

        loop.add_handler(delivery.fileno(), readable, PollEvents.READ)
        loop.call_later(20, loop.stop)
        with loop._poller._waking_mutex:  # pika's, as while the loop wakes itself
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            print("handlers ran", flush=True)
        loop.start()
        delivery.close()
        print(got, signal.set_wakeup_fd(-1))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["handlers ran", "['SIGTERM', 'SIGINT'] -1"], done.stdout


def test_the_command_line_installs_its_handlers_before_the_heavy_imports() -> None:
    """Until run_from_environment installs them a SIGTERM has the default action (143):
    importing the command line must not import the settings (pika, ssl) first."""
    done = run("""
        import sys
        import sidecar.cli
        print(sorted(m for m in ("sidecar.shell.config", "pika", "ssl") if m in sys.modules))
    """)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
