"""The operations settings: HTTP port, log format, stuck and volume thresholds, OpenLineage."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import manager_env

from sidecar.shell import config
from sidecar.shell.config import ConfigError


def load(tmp_path: Path, **changes: str) -> config.Settings:
    return config.load({**manager_env(tmp_path), **changes})


def test_operations_defaults(tmp_path: Path) -> None:
    s = load(tmp_path)
    assert (s.http_port, s.http_host) == (9090, "0.0.0.0")
    assert s.log_format == "auto"
    assert s.stuck_after == 300 and s.volume_min_free == 256 << 20
    assert s.openlineage == "off"
    c = config.core_config(s)
    assert (c.stuck_after, c.volume_min_free, c.pause_when_orphaned) == (300, 256 << 20, True)


def test_zero_switches_the_http_endpoint_stuck_detection_and_volume_rule_off(
        tmp_path: Path) -> None:
    s = load(tmp_path, SIDECAR_HTTP_PORT="0", SIDECAR_STUCK_AFTER="0",
             SIDECAR_VOLUME_MIN_FREE="0")
    assert (s.http_port, s.stuck_after, s.volume_min_free) == (0, 0.0, 0)


def test_auto_asks_for_any_free_http_port(tmp_path: Path) -> None:
    assert load(tmp_path, SIDECAR_HTTP_PORT="auto").http_port == config.ANY_PORT
    with pytest.raises(ConfigError) as err:
        load(tmp_path, SIDECAR_HTTP_PORT="-1")
    assert "`auto` for any free port, or 0 for off" in str(err.value)


@pytest.mark.parametrize(("name", "raw"), [
    ("SIDECAR_HTTP_PORT", "65536"), ("SIDECAR_HTTP_PORT", "http"),
    ("SIDECAR_LOG_FORMAT", "xml"), ("SIDECAR_STUCK_AFTER", "-1"),
    ("SIDECAR_VOLUME_MIN_FREE", "lots"), ("SIDECAR_OPENLINEAGE", "kafka"),
])
def test_invalid_operations_settings_are_named(tmp_path: Path, name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, **{name: raw})
    assert err.value.variable == name


@pytest.mark.parametrize("transport", ["file", "http"])
def test_openlineage_file_and_http_need_a_url(tmp_path: Path, transport: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, SIDECAR_OPENLINEAGE=transport)
    assert err.value.variable == "SIDECAR_OPENLINEAGE_URL"
    s = load(tmp_path, SIDECAR_OPENLINEAGE=transport, SIDECAR_OPENLINEAGE_URL="http://ol:5000")
    assert s.openlineage == transport


def test_the_openlineage_api_key_is_a_secret(tmp_path: Path) -> None:
    s = load(tmp_path, SIDECAR_OPENLINEAGE="http", SIDECAR_OPENLINEAGE_URL="http://ol:5000",
             SIDECAR_OPENLINEAGE_API_KEY="ol-api-key-123")
    assert "ol-api-key-123" not in repr(s)
    assert next(v for v in config.VARIABLES if v.name == "SIDECAR_OPENLINEAGE_API_KEY").secret
