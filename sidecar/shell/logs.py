"""Logging: one JSON object per line in a container, readable lines on a terminal.

``SIDECAR_LOG_FORMAT=auto`` (the default) picks JSON when stderr is not a terminal, which is
the case in every container. The core's Log effects become records whose ``code``,
``fragment``, ``state`` and ``event`` are separate JSON fields (and a ``[code] message
fragment=...`` line in text). Secrets are never written: the values of the secret settings
and the password of any ``scheme://user:password@`` URL are replaced by ``***`` in every
line, whoever logged it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from ..core import effects as fx

LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FIELDS = ("code", "fragment", "state", "event")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):[^@\s/]*@")
MIN_SECRET = 4  # shorter values would blank out ordinary words
# pika's loggers of connecting and of the transport: their errors (about seven records for
# each failed or lost connection) are the failure the sidecar reports itself, one line per
# attempt naming the broker (sidecar/shell/io/amqp.py). Below DEBUG only their CRITICAL records
# remain; pika's other loggers (channels, callbacks) stay at ERROR.
PIKA_CONNECTION_LOGGERS = ("pika.adapters", "pika.connection")

core_log = logging.getLogger("sidecar.core")


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET},
                              key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None):
        super().__init__(TEXT_FORMAT)
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` plus ``code``, ``fragment``, ``state``,
    ``event`` and ``error`` when the record has them."""

    def __init__(self, redact: Redactor | None = None):
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        detail = getattr(record, "detail", None)
        doc: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(detail if detail is not None else record.getMessage()),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value:
                doc[key] = value
        if record.exc_info:
            doc["error"] = self.redact(self.formatException(record.exc_info))
        elif getattr(record, "error", None):
            doc["error"] = self.redact(str(record.error))  # type: ignore[attr-defined]
        return json.dumps(doc, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class OneLineLibraries(logging.Filter):
    """Records of other libraries carry no traceback: pika, for one, logs a failed TLS
    handshake with ``LOGGER.exception``, and a log line per retry with 20 lines of stack
    hides the one line that says what is wrong. The exception's type and message stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("sidecar"):
            return True
        message = record.getMessage()
        if record.exc_info:
            err = record.exc_info[1]
            if err is not None:
                message = f"{message}: {type(err).__name__}: {err}"
            record.exc_info = None
            record.exc_text = None
        if "\n" in message:  # a stack formatted into the message (pika does that too)
            lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
            message = f"{lines[0]} ... {lines[-1]}" if len(lines) > 1 else lines[0]
        record.msg, record.args = message, None
        return True


def use_json(fmt: str, stream: TextIO) -> bool:
    if fmt == "auto":
        return not (hasattr(stream, "isatty") and stream.isatty())
    return fmt == "json"


def setup(level: str, fmt: str = "auto", secrets: Iterable[str] = (),
          stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger once, for the process (the CLI calls it)."""
    stream = stream or sys.stderr
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redact) if use_json(fmt, stream) else
                         TextFormatter(redact))
    if logging.getLevelName(level) > logging.DEBUG:
        handler.addFilter(OneLineLibraries())
    handler.addFilter(demote_pika_errors)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = max(logging.WARNING, logging.getLevelName(level))
    for noisy in ("pika", "transitions"):  # their INFO lines are per frame / per transition
        logging.getLogger(noisy).setLevel(quiet)
    if level != "DEBUG":  # pika's warnings are not the sidecar's to show
        logging.getLogger("pika").setLevel(logging.ERROR)
    for name in PIKA_CONNECTION_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else
                                         logging.CRITICAL)
    return handler


def demote_pika_errors(record: logging.LogRecord) -> bool:
    """pika logs a lost connection as ERROR (several records); the sidecar handles it,
    reconnects and says so itself (docs/reliability.md): pika's records that are shown (at
    DEBUG; below it only those of PIKA_CONNECTION_LOGGERS are off) stay, as warnings, so
    that a failure still gives one error line, the sidecar's."""
    if record.levelno == logging.ERROR and record.name.startswith("pika"):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def log_effect(e: fx.Log, state: str = "", event: str = "") -> None:
    """A core Log effect as a record: text keeps the ``[code] message fragment=...`` line."""
    suffix = f" fragment={e.fragment}" if e.fragment else ""
    core_log.log(LEVELS.get(e.level, logging.INFO), "[%s] %s%s", e.code, e.message, suffix,
                 extra={"code": e.code, "fragment": e.fragment, "state": state,
                        "event": event, "detail": e.message})
