"""Logs: JSON lines in a container (no terminal), text on a terminal, the core's Log fields
as JSON fields, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from test_config import ACCESS_KEY, BROKER_PASSWORD, SECRET_KEY, manager_env

from sidecar.cli import secrets
from sidecar.core import effects as fx
from sidecar.shell import config
from sidecar.shell.logs import log_effect, setup

FRAGMENT = "f" * 64


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def configure(stream, fmt="auto", secret_values=()) -> None:
    setup("INFO", fmt, secret_values, stream=stream)


def test_auto_writes_one_json_object_per_line_without_a_terminal(restore_logging) -> None:
    out = io.StringIO()
    configure(out)
    log_effect(fx.Log("warning", "redelivered", "input was delivered before", FRAGMENT),
               state="received", event="Delivered")
    logging.getLogger("sidecar.storage").info("second line")
    first, second = out.getvalue().splitlines()
    doc = json.loads(first)
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "sidecar.core"
    assert doc["message"] == "input was delivered before"
    assert (doc["code"], doc["fragment"], doc["state"], doc["event"]) == (
        "redelivered", FRAGMENT, "received", "Delivered")
    assert doc["time"].endswith("Z")
    assert json.loads(second) == {**json.loads(second), "message": "second line",
                                  "logger": "sidecar.storage"}
    assert "code" not in json.loads(second)


def test_auto_writes_readable_text_on_a_terminal(restore_logging) -> None:
    out = Tty()
    configure(out)
    log_effect(fx.Log("error", "dead-letter-missing-object", "gone", FRAGMENT))
    [line] = out.getvalue().splitlines()
    assert f" ERROR sidecar.core: [dead-letter-missing-object] gone fragment={FRAGMENT}" in line
    assert not line.startswith("{")


def test_the_format_can_be_forced(restore_logging) -> None:
    out = Tty()
    configure(out, "json")
    logging.getLogger("sidecar").info("hello")
    assert json.loads(out.getvalue())["message"] == "hello"
    out = io.StringIO()
    configure(out, "text")
    logging.getLogger("sidecar").info("hello")
    assert out.getvalue().rstrip().endswith("INFO sidecar: hello")


def test_an_exception_is_the_error_field(restore_logging) -> None:
    out = io.StringIO()
    configure(out)
    try:
        raise ValueError("broken thing")
    except ValueError:
        logging.getLogger("sidecar").exception("cannot start")
    doc = json.loads(out.getvalue())
    assert doc["message"] == "cannot start"
    assert "ValueError: broken thing" in doc["error"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_line_contains_a_secret(restore_logging, tmp_path: Path, fmt: str) -> None:
    settings = config.load(manager_env(tmp_path))
    out = io.StringIO()
    configure(out, fmt, secrets(settings))
    log = logging.getLogger("sidecar.amqp")
    log.warning("broker not reachable at %s", settings.mq_broker_url)
    log.warning("minio said %s / %s", SECRET_KEY, ACCESS_KEY)
    log.warning("some client printed amqp://other:pa55word@host:5672/")
    try:
        raise RuntimeError(f"auth failed for {BROKER_PASSWORD}")
    except RuntimeError:
        log.exception("oops")
    text = out.getvalue()
    for secret in (SECRET_KEY, ACCESS_KEY, BROKER_PASSWORD, "pa55word"):
        assert secret not in text
    assert "amqp://iterum:***@iterum-mq-rabbitmq:5672" in text
    assert "amqp://other:***@host" in text


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_library_exception_is_one_line_unless_debugging(restore_logging, fmt: str) -> None:
    out = io.StringIO()
    configure(out, fmt)
    try:
        raise OSError("certificate verify failed")
    except OSError:
        logging.getLogger("pika.channel").exception("SSL do_handshake failed: %s", "details")
        logging.getLogger("sidecar.loop").exception("our own")
        logging.getLogger("pika.channel").error(
            "Wrapped func exited with exception. Caller's stack:\n%s",
            "Traceback (most recent call last):\n  File x, line 1\nOSError: boom\n")
    lines = out.getvalue().splitlines()
    library = lines[0]
    wrapped = [ln for ln in lines if "Wrapped func" in ln]
    assert len(wrapped) == 1 and wrapped[0].rstrip('"}').endswith("OSError: boom")
    assert "SSL do_handshake failed: details: OSError: certificate verify failed" in library
    assert "Traceback" not in library
    assert "Traceback" in out.getvalue().split(library, 1)[1]  # ours keep their stack

    out = io.StringIO()
    setup("DEBUG", fmt, (), stream=out)
    try:
        raise OSError("certificate verify failed")
    except OSError:
        logging.getLogger("pika").exception("handshake")
    assert "Traceback" in out.getvalue()


def pika_connection_failure() -> None:
    """What pika logs for one failed connection attempt (abridged), and one channel error."""
    logging.getLogger("pika.adapters.utils.io_services_utils").error(
        "_produce() failed, aborting connection: error=%r; Caller's stack:\n%s",
        BrokenPipeError(32, "Broken pipe"), "Traceback (most recent call last):\n"
        "  File x, line 1\nBrokenPipeError: [Errno 32] Broken pipe\n")
    logging.getLogger("pika.adapters.utils.connection_workflow").error(
        "TCP Connection attempt failed: ConnectionRefusedError(111, 'Connection refused')")
    try:
        raise ConnectionResetError("reset")
    except ConnectionResetError:
        logging.getLogger("pika.adapters.base_connection").exception("connection_lost")
    logging.getLogger("pika.connection").error("Connection closed while authenticating")
    logging.getLogger("pika.adapters.base_connection").warning("a pika warning")
    logging.getLogger("pika.channel").error("Unexpected frame: %r", "frame")


def test_pika_connection_records_are_off_unless_debugging(restore_logging) -> None:
    """The sidecar logs one line per connection attempt itself (sidecar/shell/io/amqp.py):
    below DEBUG pika's records of connecting are off, its other errors stay as one-line
    warnings (an operator's rule "one error line per failure" holds)."""
    stream = io.StringIO()
    configure(stream, "text")
    pika_connection_failure()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and " WARNING pika.channel: Unexpected frame" in lines[0], lines


def test_pika_connection_records_are_warnings_when_debugging(restore_logging) -> None:
    stream = io.StringIO()
    setup("INFO", "text", (), stream=stream)  # a second set-up in a process sets them back
    setup("DEBUG", "text", (), stream=stream)
    pika_connection_failure()
    records = [ln for ln in stream.getvalue().splitlines() if ln.startswith("20")]
    assert len(records) == 6 and all(" WARNING pika." in ln for ln in records), records
    assert "Broken pipe" in records[0] and "Traceback" in stream.getvalue()  # stacks kept
