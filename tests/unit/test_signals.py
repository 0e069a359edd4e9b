"""SIGTERM from the start of a run to the process's end (sidecar/shell/signals.py): before the
loop a signal exits 0; once the exit code is decided it is held against any signal. Each
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


def test_a_sigterm_before_the_loop_exits_0_and_holds_it() -> None:
    done = run("""
        import os, signal, time
        from sidecar.shell import signals
        signals.handle(signals.quiet_exit)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except SystemExit:
            # held: ignored, not handled (the teardown would reset a handler to the default)
            print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
            raise
        time.sleep(10)  # not reached
    """)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip() == "True", done.stdout


def test_the_command_line_installs_its_handlers_before_the_heavy_imports() -> None:
    """Until run_from_environment installs them a SIGTERM has the default action (143):
    importing the command line must not import the settings (pika, ssl) first."""
    done = run("""
        import sys
        import sidecar.cli
        print(sorted(m for m in ("sidecar.shell.config", "pika", "ssl") if m in sys.modules))
    """)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
