"""The value parsers: each takes the raw string and returns the typed value or raises
ValueError(problem); ConfigError turns that into the one line the user sees."""

from __future__ import annotations

from collections.abc import Callable


class ConfigError(Exception):
    """An environment variable is missing or invalid; ``str()`` is one line for the user."""

    def __init__(self, variable: str, problem: str, shown: str | None = None):
        self.variable = variable
        value = f"={shown!r}" if shown is not None else ""
        super().__init__(f"{variable}{value} is not valid: {problem}")


_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_go_bool(raw: str) -> bool:
    """Go's strconv.ParseBool, which the original used for MINIO_USE_SSL."""
    if raw in _GO_TRUE:
        return True
    if raw in _GO_FALSE:
        return False
    raise ValueError("expected one of 1,t,T,TRUE,true,True,0,f,F,FALSE,false,False")


def parse_text(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


def parse_prefetch(raw: str) -> int:
    """'' means unset (-1), as in the original; otherwise an integer >= 0."""
    if raw == "":
        return -1
    value = _int(raw)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("must be an integer") from None


def positive_int(raw: str) -> int:
    value = _int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number of seconds > 0")
    return value


_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "k": 1 << 10,
          "m": 1 << 20, "g": 1 << 30}


def byte_size(raw: str) -> int:
    """An integer number of bytes, optionally with a binary suffix: 64MiB, 512KiB, 1GiB."""
    text = raw.strip().lower()
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits):]
    if not digits.isdigit() or unit not in _UNITS:
        raise ValueError("must be a byte count such as 1048576, 512KiB or 64MiB")
    value = int(digits) * _UNITS[unit]
    if value < 1:
        raise ValueError("must be at least 1 byte")
    return value


def seconds_or_off(raw: str) -> float:
    """A number of seconds > 0, or 0 to switch the feature off."""
    if raw.strip() in ("0", "0.0"):
        return 0.0
    return seconds(raw)


def byte_size_or_off(raw: str) -> int:
    """A byte size, or 0 to switch the feature off."""
    return 0 if raw.strip() == "0" else byte_size(raw)


def port(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port, 1-65535, or 0 for off")
    return value


ANY_PORT = -1  # SIDECAR_HTTP_PORT=auto: a free port the kernel picks, logged once bound


def http_port(raw: str) -> int:
    """A TCP port, `auto` (ANY_PORT) for any free one, or 0 for off."""
    if raw.strip().lower() == "auto":
        return ANY_PORT
    try:
        return port(raw)
    except ValueError:
        raise ValueError("must be a TCP port, 1-65535, `auto` for any free port, or 0 for "
                         "off") from None


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return raw

    return parse


def log_level(raw: str) -> str:
    return choice("DEBUG", "INFO", "WARNING", "ERROR")(raw.upper())


def file_mode(raw: str) -> int:
    """Permission bits in octal, as for chmod: 0660, 660 or 0o660."""
    text = raw.strip().lower().removeprefix("0o")
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError("must be permission bits in octal, e.g. 0660") from None
    if not 0 <= value <= 0o777:
        raise ValueError("must be permission bits between 0000 and 0777")
    return value


def optional_uid(raw: str) -> int | None:
    """A numeric uid, or empty for no check."""
    if not raw.strip():
        return None
    value = _int(raw)
    if value < 0:
        raise ValueError("must be a numeric uid >= 0, or empty")
    return value


def path_or_empty(raw: str) -> str:
    """A file path; whether it can be read is checked with the other settings."""
    return raw.strip()
