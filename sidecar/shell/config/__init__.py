"""One typed settings object, read once from the environment.

Every variable is declared once, as a field of ``Settings`` (settings.py) carrying its name,
parser, default and documentation; ``VARIABLES`` is derived from those fields and drives
``load()``, the _FILE variants of secrets and the generated reference. The parsers are in
parsing.py, the checks across variables and the derived values in checks.py. The core's
own configuration is derived here too (``core_config``), so the core never sees Settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

from ...core.models import CoreConfig
from .checks import check_amqp_tls, check_broker_url, derived, join_under
from .parsing import ANY_PORT, ConfigError
from .settings import VARIABLES, BrokerSettings, Settings, Variable

__all__ = ["ANY_PORT", "VARIABLES", "BrokerSettings", "ConfigError", "Settings", "Variable",
           "core_config", "join_under", "known_names", "load", "load_broker",
           "read_secret_file", "value"]


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate every variable; raise ConfigError naming the first bad one."""
    env = os.environ if environ is None else environ
    notices: list[str] = []
    values: dict[str, Any] = {var.attr: value(var, env, notices) for var in VARIABLES}
    values.update(derived(values))
    return Settings(**values, notices=tuple(notices))


def value(var: Variable, env: Mapping[str, str], notices: list[str] | None = None) -> Any:
    """One variable's parsed value (from its _FILE variant if that is set)."""
    raw = env.get(var.name) or ""
    if var.file_variant and (path := env.get(var.file_name) or ""):
        from_file = read_secret_file(var.file_name, path)
        if raw and raw != from_file and notices is not None:
            notices.append(f"{var.file_name} is set: {var.name} from the environment is "
                           "ignored")
        raw = from_file
    if raw == "":  # unset and empty are the same, as for Go's os.Getenv
        if var.default is None:
            also = f" (nor {var.file_name})" if var.file_variant else ""
            raise ConfigError(var.name, f"it is required but not set{also}")
        raw = var.default
    try:
        return var.parse(raw)
    except ValueError as err:
        raise ConfigError(var.name, str(err), None if var.secret else raw) from None


def read_secret_file(variable: str, path: str) -> str:
    """The content of a secret file, read once; trailing newlines are not part of it."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError(variable, f"cannot read the file ({err.strerror})", path) from None
    except UnicodeDecodeError:
        raise ConfigError(variable, "the file is not UTF-8 text", path) from None
    text = text.rstrip("\r\n")
    if not text:
        raise ConfigError(variable, "the file is empty", path)
    return text


def load_broker(environ: Mapping[str, str] | None = None) -> BrokerSettings:
    """Only the broker's variables (with the same rules and _FILE variants as load())."""
    env = os.environ if environ is None else environ
    by_attr = {v.attr: v for v in VARIABLES}
    values = {f.name: value(by_attr[f.name], env) for f in fields(BrokerSettings)}
    check_broker_url(values["mq_broker_url"])
    check_amqp_tls(urlsplit(values["mq_broker_url"]).scheme == "amqps",
                   values["amqp_ca_file"], values["amqp_cert_file"], values["amqp_key_file"])
    return BrokerSettings(**values)


def known_names() -> set[str]:
    """Every environment variable the sidecar reads, _FILE variants included."""
    return {v.name for v in VARIABLES} | {v.file_name for v in VARIABLES if v.file_variant}


# CoreConfig fields whose value is a Settings attribute of another name. Every other field
# is copied from the Settings field or property of its own name; CoreConfig's names are
# recorded in journals, so neither side is renamed to match.
_CORE_FROM = {"volume": "data_volume_path", "step": "iterum_name",
              "output_bucket": "minio_output_bucket", "output_queue": "mq_output_queue"}
# CoreConfig fields that are not settings: production switches these rules on (their
# CoreConfig defaults keep them off for tests and tools).
_CORE_FIXED: dict[str, Any] = {"pause_when_orphaned": True}


def core_config(settings: Settings) -> CoreConfig:
    """The settings the core's decisions depend on, driven by CoreConfig's fields."""
    values: dict[str, Any] = {}
    for f in fields(CoreConfig):
        if f.name in _CORE_FIXED:
            values[f.name] = _CORE_FIXED[f.name]
            continue
        got = getattr(settings, _CORE_FROM.get(f.name, f.name))
        values[f.name] = dict(got) if isinstance(got, Mapping) else got  # the core's own copy
    return CoreConfig(**values)
