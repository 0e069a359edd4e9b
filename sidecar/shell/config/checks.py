"""The checks across variables, and the values derived from them (paths, ITERUM_CONFIG).

Each raises ConfigError naming the variable at fault."""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ...core.protocol import InvalidMessage, safe_relative
from ..io import tls
from .parsing import ConfigError


def derived(v: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields computed from the parsed variables ``v`` (which it normalises:
    DATA_VOLUME_PATH made absolute), after the checks across variables."""
    volume = v["data_volume_path"] = os.path.abspath(v["data_volume_path"])
    if not os.path.isdir(volume):
        raise ConfigError("DATA_VOLUME_PATH", "no such directory", volume)
    if "://" in v["minio_url"]:
        raise ConfigError("MINIO_URL", "give host:port without a scheme", v["minio_url"])
    check_broker_url(v["mq_broker_url"])
    _check_tls(v)
    if v["openlineage"] != "off" and importlib.util.find_spec("openlineage") is None:
        raise ConfigError("SIDECAR_OPENLINEAGE", "needs the openlineage extra: pip install "
                          "'iterum-sidecar[openlineage]'", v["openlineage"])
    if v["openlineage"] in ("file", "http") and not v["openlineage_url"]:
        raise ConfigError("SIDECAR_OPENLINEAGE_URL",
                          f"required with SIDECAR_OPENLINEAGE={v['openlineage']}", "")
    mapping, files = _parse_iterum_config(v["iterum_config"])
    return {
        "queue_mapping": mapping,
        "config_files": files,
        "config_dir": _config_dir(volume, v["iterum_config_path"]),
        "tts_path": _socket_path(volume, "TRANSFORMATION_STEP_INPUT",
                                 v["transformation_step_input"]),
        "fts_path": _socket_path(volume, "TRANSFORMATION_STEP_OUTPUT",
                                 v["transformation_step_output"]),
    }


def check_broker_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("amqp", "amqps") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        ok = False
    if not ok:  # the URL holds the password: never echo it
        raise ConfigError("MQ_BROKER_URL", "expected amqp://user:password@host:port/vhost")


def _check_tls(v: dict[str, Any]) -> None:
    """TLS files must be readable PEM, and only given where TLS is used."""
    amqps = urlsplit(v["mq_broker_url"]).scheme == "amqps"
    check_amqp_tls(amqps, v["amqp_ca_file"], v["amqp_cert_file"], v["amqp_key_file"])
    ca = v["s3_ca_file"]
    if ca:
        if not v["minio_use_ssl"]:
            raise ConfigError("SIDECAR_S3_CA_FILE", "needs MINIO_USE_SSL=true (S3 over "
                              "HTTPS)", ca)
        _check_pem("SIDECAR_S3_CA_FILE", ca, lambda: tls.check_ca_file(ca))


def check_amqp_tls(amqps: bool, ca: str, cert: str, key: str) -> None:
    given = [(n, p) for n, p in (("SIDECAR_AMQP_CA_FILE", ca), ("SIDECAR_AMQP_CERT_FILE", cert),
                                 ("SIDECAR_AMQP_KEY_FILE", key)) if p]
    if given and not amqps:
        name, path = given[0]
        raise ConfigError(name, "needs an amqps:// MQ_BROKER_URL (TLS to the broker)", path)
    if key and not cert:
        raise ConfigError("SIDECAR_AMQP_KEY_FILE", "needs SIDECAR_AMQP_CERT_FILE", key)
    if ca:
        _check_pem("SIDECAR_AMQP_CA_FILE", ca, lambda: tls.check_ca_file(ca))
    if key and not os.path.isfile(key):
        raise ConfigError("SIDECAR_AMQP_KEY_FILE", "no such file", key)
    if cert:
        _check_pem("SIDECAR_AMQP_CERT_FILE", cert, lambda: tls.amqp_context("", cert, key))


def _check_pem(variable: str, path: str, load: Callable[[], Any]) -> None:
    if not os.path.isfile(path):
        raise ConfigError(variable, "no such file", path)
    try:
        load()
    except (OSError, ssl.SSLError, ValueError) as err:
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
        raise ConfigError(variable, f"not a usable PEM file ({reason})", path) from None


def join_under(volume: str, relative: str) -> str:
    """Go's path.Join: an absolute second part is appended, not substituted; then clean."""
    return posixpath.normpath(posixpath.join(volume, relative.lstrip("/")))


def _inside(volume: str, path: str) -> bool:
    root = posixpath.normpath(volume)
    return path.startswith(root.rstrip("/") + "/")


def _socket_path(volume: str, name: str, relative: str) -> str:
    path = join_under(volume, relative)
    if not path.endswith(".sock"):
        raise ConfigError(name, "the socket path must end in .sock", relative)
    if not _inside(volume, path):
        raise ConfigError(name, "the socket must lie inside DATA_VOLUME_PATH", relative)
    return path


def _config_dir(volume: str, relative: str) -> str:
    path = join_under(volume, relative)
    if not _inside(volume, path):
        raise ConfigError("ITERUM_CONFIG_PATH",
                          "must name a directory inside DATA_VOLUME_PATH (e.g. config)", relative)
    return path


def _parse_iterum_config(raw: str) -> tuple[dict[str, str], dict[str, str]]:
    if not raw.strip():
        return {}, {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError("ITERUM_CONFIG", f"not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError("ITERUM_CONFIG", "must be a JSON object")
    files = _string_map(data, "config_files")
    for name in files.values():
        try:
            safe_relative(name, "config file name")
        except InvalidMessage as err:
            raise ConfigError("ITERUM_CONFIG", f"config_files: {err}") from None
    return _string_map(data, "queue_mapping"), files


def _string_map(data: dict, key: str) -> dict[str, str]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError("ITERUM_CONFIG", f"'{key}' must be an object of strings to strings")
    return dict(value)
