"""config.load: the Iterum variables parsed with the Go sidecar's rules (§2.1), the
sidecar's own knobs, and errors that name the variable but never show a secret."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sidecar.core import CoreConfig
from sidecar.shell import config
from sidecar.shell.config import ConfigError

SECRET_KEY = "s3cr3t-minio-key"
ACCESS_KEY = "minio-access-id"
BROKER_PASSWORD = "hunter2-broker-pw"

REQUIRED = (
    "DATA_VOLUME_PATH", "ITERUM_NAME", "PIPELINE_HASH", "MINIO_URL", "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY", "MINIO_OUTPUT_BUCKET", "MQ_BROKER_URL", "MQ_INPUT_QUEUE",
    "MQ_OUTPUT_QUEUE", "MANAGER_URL", "TRANSFORMATION_STEP_INPUT",
    "TRANSFORMATION_STEP_OUTPUT",
)


def manager_env(volume: Path) -> dict[str, str]:
    """What the manager gives a step's sidecar (§2.2), with a real directory as volume."""
    h = "abcdefghijklmnopqrstuvwxyz012345"
    return {
        "DATA_VOLUME_PATH": str(volume),
        "ITERUM_NAME": f"{h}-edge-detection",
        "PIPELINE_HASH": h,
        "ITERUM_CONFIG": json.dumps({"BLUR": 3, "queue_mapping": {"rejects": f"{h}-rejects"},
                                     "config_files": {"model": "model.bin"}}),
        "ITERUM_CONFIG_PATH": "config",
        "MINIO_URL": "iterum-minio:9000",
        "MINIO_ACCESS_KEY": ACCESS_KEY,
        "MINIO_SECRET_KEY": SECRET_KEY,
        "MINIO_USE_SSL": "0",
        "MINIO_OUTPUT_BUCKET": f"{h}-edge-detection-output",
        "MQ_BROKER_URL": f"amqp://iterum:{BROKER_PASSWORD}@iterum-mq-rabbitmq:5672",
        "MQ_INPUT_QUEUE": f"{h}-fragmenter_output",
        "MQ_OUTPUT_QUEUE": f"{h}-edge_detection_output",
        "MQ_PREFETCH_COUNT": "",
        "MANAGER_URL": "http://manager-service:3001",
        "TRANSFORMATION_STEP_INPUT": "tts.sock",
        "TRANSFORMATION_STEP_OUTPUT": "fts.sock",
    }


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return manager_env(tmp_path)


def load_with(env: dict[str, str], **changes: str | None) -> config.Settings:
    e = dict(env)
    for k, v in changes.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return config.load(e)


def error_for(env: dict[str, str], **changes: str | None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_with(env, **changes)
    return info.value


def assert_names(err: ConfigError, variable: str) -> None:
    assert err.variable == variable
    assert str(err).startswith(variable)
    assert "\n" not in str(err)


# --- a full, valid environment ---------------------------------------------------------


def test_manager_environment_is_parsed(env: dict[str, str], tmp_path: Path) -> None:
    s = config.load(env)
    h = env["PIPELINE_HASH"]
    assert s.data_volume_path == str(tmp_path)
    assert s.iterum_name == f"{h}-edge-detection"
    assert s.pipeline_hash == h
    assert s.minio_url == "iterum-minio:9000"
    assert (s.minio_access_key, s.minio_secret_key) == (ACCESS_KEY, SECRET_KEY)
    assert s.minio_use_ssl is False
    assert s.minio_output_bucket == f"{h}-edge-detection-output"
    assert s.mq_input_queue == f"{h}-fragmenter_output"
    assert s.mq_output_queue == f"{h}-edge_detection_output"
    assert s.mq_prefetch_count == -1
    assert s.manager_url == "http://manager-service:3001"
    # derived values
    assert s.tts_path == str(tmp_path / "tts.sock")
    assert s.fts_path == str(tmp_path / "fts.sock")
    assert s.config_dir == str(tmp_path / "config")
    assert s.queue_mapping == {"rejects": f"{h}-rejects"}
    assert s.config_files == {"model": "model.bin"}
    assert s.iterum_config == env["ITERUM_CONFIG"]  # kept verbatim for the transformation
    assert s.lineage_queue == f"{h}-lineage"
    assert s.dead_letter_queue == f"{h}-fragmenter_output-dead"
    assert s.config_bucket == f"{h}-iterum-config"
    assert s.upstream_url == (f"http://manager-service:3001/pipeline/{h}/{h}-edge-detection"
                              "/upstream_finished")
    assert s.dummy_manager is False


def test_project_defaults(env: dict[str, str]) -> None:
    s = config.load(env)
    assert s.max_frame_bytes == 64 * 1024 * 1024  # §16.4
    assert s.object_layout == "per-fragment"  # §16.7
    assert s.prefetch > 0  # §16.10: finite, never "no QoS"
    for knob in (s.transformation_grace, s.shutdown_grace, s.queue_poll_interval):
        assert 0 < knob < float("inf")


def test_manager_url_containing_dummy_selects_the_dummy_checker(env: dict[str, str]) -> None:
    assert load_with(env, MANAGER_URL="http://dummy:1").dummy_manager is True


def test_settings_repr_shows_no_secret(env: dict[str, str]) -> None:
    text = repr(config.load(env))
    for secret in (SECRET_KEY, ACCESS_KEY, BROKER_PASSWORD):
        assert secret not in text


def test_core_config_is_derived_from_the_settings(env: dict[str, str], tmp_path: Path) -> None:
    s = load_with(env, MQ_PREFETCH_COUNT="7", SIDECAR_OBJECT_LAYOUT="flat",
                  SIDECAR_PUBLISH_ATTEMPTS="2")
    c = config.core_config(s)
    assert c.volume == str(tmp_path)
    assert c.step == s.iterum_name
    assert (c.output_bucket, c.output_queue) == (s.minio_output_bucket, s.mq_output_queue)
    assert (c.lineage_queue, c.dead_letter_queue) == (s.lineage_queue, s.dead_letter_queue)
    assert c.prefetch == 7
    assert c.publish_attempts == 2
    assert dict(c.queue_mapping) == dict(s.queue_mapping)
    assert c.object_key("f" * 64, "a.jpg") == "iterum_data/a.jpg"
    per_fragment = config.core_config(config.load(env))
    assert per_fragment.object_key("f" * 64, "a.jpg") == f"iterum_data/{'f' * 64}/a.jpg"


# --- required variables ----------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_required_variable_missing_is_named(env: dict[str, str], name: str,
                                            value: str | None) -> None:
    err = error_for(env, **{name: value})
    assert_names(err, name)
    assert "required" in str(err)


def test_volume_must_be_an_existing_directory(env: dict[str, str], tmp_path: Path) -> None:
    assert_names(error_for(env, DATA_VOLUME_PATH=str(tmp_path / "missing")),
                 "DATA_VOLUME_PATH")
    (tmp_path / "file").write_text("x")
    assert_names(error_for(env, DATA_VOLUME_PATH=str(tmp_path / "file")), "DATA_VOLUME_PATH")


def test_relative_volume_is_made_absolute_or_rejected(env: dict[str, str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path.parent)
    try:
        s = load_with(env, DATA_VOLUME_PATH=tmp_path.name)
    except ConfigError as err:
        assert_names(err, "DATA_VOLUME_PATH")
        return
    assert s.data_volume_path == str(tmp_path)
    assert s.tts_path == str(tmp_path / "tts.sock")


# --- MINIO_USE_SSL: Go strconv.ParseBool ------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "t", "T", "TRUE", "true", "True"])
def test_use_ssl_go_true(env: dict[str, str], raw: str) -> None:
    assert load_with(env, MINIO_USE_SSL=raw).minio_use_ssl is True


@pytest.mark.parametrize("raw", ["0", "f", "F", "FALSE", "false", "False"])
def test_use_ssl_go_false(env: dict[str, str], raw: str) -> None:
    assert load_with(env, MINIO_USE_SSL=raw).minio_use_ssl is False


def test_use_ssl_unset_is_false(env: dict[str, str]) -> None:
    assert load_with(env, MINIO_USE_SSL=None).minio_use_ssl is False


def test_use_ssl_empty_is_false_like_go(env: dict[str, str]) -> None:
    assert load_with(env, MINIO_USE_SSL="").minio_use_ssl is False


@pytest.mark.parametrize("raw", ["yes", "no", "TrUe", "on", "2", " 1", "tRUE"])
def test_use_ssl_rejects_what_go_rejects(env: dict[str, str], raw: str) -> None:
    err = error_for(env, MINIO_USE_SSL=raw)
    assert_names(err, "MINIO_USE_SSL")
    assert repr(raw) in str(err)  # not a secret: the value is shown


# --- MQ_PREFETCH_COUNT and the prefetch actually used ------------------------------------


@pytest.mark.parametrize(("raw", "parsed"), [(None, -1), ("", -1), ("0", 0), ("7", 7)])
def test_prefetch_count_parsing(env: dict[str, str], raw: str | None, parsed: int) -> None:
    assert load_with(env, MQ_PREFETCH_COUNT=raw).mq_prefetch_count == parsed


@pytest.mark.parametrize("raw", [None, "", "0"])
def test_prefetch_falls_back_to_the_default_when_unset_or_zero(env: dict[str, str],
                                                               raw: str | None) -> None:
    s = load_with(env, MQ_PREFETCH_COUNT=raw, SIDECAR_DEFAULT_PREFETCH="3")
    assert s.prefetch == 3


def test_prefetch_uses_the_iterum_value_when_positive(env: dict[str, str]) -> None:
    assert load_with(env, MQ_PREFETCH_COUNT="9", SIDECAR_DEFAULT_PREFETCH="3").prefetch == 9


@pytest.mark.parametrize("raw", ["-1", "x", "1.5", "1e3"])
def test_prefetch_count_invalid(env: dict[str, str], raw: str) -> None:
    assert_names(error_for(env, MQ_PREFETCH_COUNT=raw), "MQ_PREFETCH_COUNT")


@pytest.mark.parametrize("raw", ["0", "-2", "many"])
def test_default_prefetch_must_be_positive(env: dict[str, str], raw: str) -> None:
    assert_names(error_for(env, SIDECAR_DEFAULT_PREFETCH=raw), "SIDECAR_DEFAULT_PREFETCH")


# --- socket paths: Go path.Join, then .sock --------------------------------------------


@pytest.mark.parametrize("name", ["TRANSFORMATION_STEP_INPUT", "TRANSFORMATION_STEP_OUTPUT"])
@pytest.mark.parametrize(("raw", "relative"), [
    ("tts.sock", "tts.sock"),
    ("/abs.sock", "abs.sock"),  # Go appends an absolute part; os.path.join would replace
    ("//two/x.sock", "two/x.sock"),
    ("sub/../x.sock", "x.sock"),
    ("./a/b.sock", "a/b.sock"),
])
def test_socket_path_is_go_path_join(env: dict[str, str], tmp_path: Path, name: str,
                                     raw: str, relative: str) -> None:
    s = load_with(env, **{name: raw})
    got = s.tts_path if name.endswith("INPUT") else s.fts_path
    assert got == str(tmp_path / relative)


@pytest.mark.parametrize("name", ["TRANSFORMATION_STEP_INPUT", "TRANSFORMATION_STEP_OUTPUT"])
@pytest.mark.parametrize("raw", ["tts", "tts.sock.bak", "tts.SOCK", "sock", "dir/"])
def test_socket_path_must_end_in_sock(env: dict[str, str], name: str, raw: str) -> None:
    assert_names(error_for(env, **{name: raw}), name)


@pytest.mark.parametrize("name", ["TRANSFORMATION_STEP_INPUT", "TRANSFORMATION_STEP_OUTPUT"])
def test_socket_path_must_stay_in_the_volume(env: dict[str, str], name: str) -> None:
    assert_names(error_for(env, **{name: "../elsewhere.sock"}), name)


# --- ITERUM_CONFIG_PATH ------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "relative"), [
    ("config", "config"), ("/config", "config"), ("a/b/", "a/b"), ("x/../cfg", "cfg")])
def test_config_path_is_joined_to_the_volume(env: dict[str, str], tmp_path: Path, raw: str,
                                             relative: str) -> None:
    assert load_with(env, ITERUM_CONFIG_PATH=raw).config_dir == str(tmp_path / relative)


@pytest.mark.parametrize("raw", [None, "", ".", "/", "a/..", "..", "../config", "a/../../b"])
def test_config_path_equal_to_or_outside_the_volume_is_rejected(
        env: dict[str, str], raw: str | None) -> None:
    assert_names(error_for(env, ITERUM_CONFIG_PATH=raw), "ITERUM_CONFIG_PATH")


# --- ITERUM_CONFIG -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "  ", "{}", '{"other": [1, 2]}',
                                 '{"queue_mapping": null, "config_files": null}'])
def test_iterum_config_without_sidecar_keys(env: dict[str, str], raw: str | None) -> None:
    s = load_with(env, ITERUM_CONFIG=raw)
    assert (s.queue_mapping, s.config_files) == ({}, {})


def test_iterum_config_unknown_keys_are_ignored(env: dict[str, str]) -> None:
    raw = json.dumps({"queue_mapping": {"a": "q-a", "b": "q-b"}, "unknown": {"x": 1},
                      "config_files": {"m": "dir/model.bin"}, "BLUR": 3})
    s = load_with(env, ITERUM_CONFIG=raw)
    assert s.queue_mapping == {"a": "q-a", "b": "q-b"}
    assert s.config_files == {"m": "dir/model.bin"}


@pytest.mark.parametrize("raw", [
    "not json",
    "{",
    "[]",
    '"a string"',
    "3",
    '{"queue_mapping": ["rejects"]}',
    '{"queue_mapping": {"rejects": 1}}',
    '{"queue_mapping": {"rejects": null}}',
    '{"queue_mapping": "rejects"}',
    '{"config_files": {"model": 3}}',
    '{"config_files": ["model.bin"]}',
    '{"config_files": {"model": "../../etc/passwd"}}',
    '{"config_files": {"model": "/etc/passwd"}}',
    '{"config_files": {"model": ""}}',
])
def test_iterum_config_invalid(env: dict[str, str], raw: str) -> None:
    assert_names(error_for(env, ITERUM_CONFIG=raw), "ITERUM_CONFIG")


# --- MINIO_URL and MQ_BROKER_URL ------------------------------------------------------------


@pytest.mark.parametrize("raw", ["http://minio:9000", "https://minio:9000", "s3://minio"])
def test_minio_url_with_a_scheme_is_rejected(env: dict[str, str], raw: str) -> None:
    err = error_for(env, MINIO_URL=raw)
    assert_names(err, "MINIO_URL")
    assert "scheme" in str(err)


@pytest.mark.parametrize("raw", [
    f"http://iterum:{BROKER_PASSWORD}@rabbit:5672",  # wrong scheme
    f"amqp://iterum:{BROKER_PASSWORD}@",  # no host
    f"iterum:{BROKER_PASSWORD}@rabbit:5672",  # no scheme at all
])
def test_broker_url_errors_never_show_the_password(env: dict[str, str], raw: str) -> None:
    err = error_for(env, MQ_BROKER_URL=raw)
    assert_names(err, "MQ_BROKER_URL")
    assert BROKER_PASSWORD not in str(err)
    assert BROKER_PASSWORD not in repr(err)


def test_malformed_broker_url_is_a_config_error(env: dict[str, str]) -> None:
    err = error_for(env, MQ_BROKER_URL=f"amqp://iterum:{BROKER_PASSWORD}@[rabbit:5672")
    assert_names(err, "MQ_BROKER_URL")
    assert BROKER_PASSWORD not in str(err)


@pytest.mark.parametrize("raw", ["amqp://u:p@rabbit:5672/", "amqps://rabbit/%2F",
                                 "amqp://rabbit"])
def test_broker_url_accepted(env: dict[str, str], raw: str) -> None:
    assert load_with(env, MQ_BROKER_URL=raw).mq_broker_url == raw


@pytest.mark.parametrize("changes", [
    {"MINIO_SECRET_KEY": ""},
    {"MINIO_ACCESS_KEY": None},
    {"MQ_BROKER_URL": f"ftp://u:{BROKER_PASSWORD}@h"},
    {"MINIO_URL": "http://m:9000"},
    {"MINIO_USE_SSL": "maybe"},
    {"ITERUM_CONFIG": "{oops"},
    {"TRANSFORMATION_STEP_INPUT": "tts"},
    {"SIDECAR_MAX_FRAME_BYTES": "huge"},
], ids=lambda c: next(iter(c)))
def test_no_error_message_contains_a_secret(env: dict[str, str], changes: dict) -> None:
    err = error_for(env, **changes)
    for secret in (SECRET_KEY, ACCESS_KEY, BROKER_PASSWORD):
        assert secret not in str(err)
        assert secret not in repr(err)
    assert_names(err, next(iter(changes)))


# --- the sidecar's own knobs --------------------------------------------------------------


@pytest.mark.parametrize(("raw", "size"), [
    ("64MiB", 64 << 20), ("512KiB", 512 << 10), ("1GiB", 1 << 30), ("1048576", 1 << 20),
    ("16mib", 16 << 20), (" 2MiB ", 2 << 20), ("7b", 7)])
def test_byte_sizes(env: dict[str, str], raw: str, size: int) -> None:
    assert load_with(env, SIDECAR_MAX_FRAME_BYTES=raw).max_frame_bytes == size
    assert load_with(env, SIDECAR_PART_SIZE=raw).part_size == size


@pytest.mark.parametrize("raw", ["64MB", "1.5MiB", "0", "0MiB", "-1", "MiB", "lots"])
def test_byte_size_invalid(env: dict[str, str], raw: str) -> None:
    assert_names(error_for(env, SIDECAR_MAX_FRAME_BYTES=raw), "SIDECAR_MAX_FRAME_BYTES")


def test_an_empty_sidecar_setting_means_its_default(env: dict[str, str]) -> None:
    assert load_with(env, SIDECAR_MAX_FRAME_BYTES="").max_frame_bytes == 64 << 20
    assert load_with(env, SIDECAR_STORAGE_WORKERS="").storage_workers == 8


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "soon"])
def test_seconds_must_be_positive_and_finite(env: dict[str, str], raw: str) -> None:
    assert_names(error_for(env, SIDECAR_TRANSFORMATION_GRACE=raw),
                 "SIDECAR_TRANSFORMATION_GRACE")


def test_seconds_accept_fractions(env: dict[str, str]) -> None:
    assert load_with(env, SIDECAR_QUEUE_POLL_INTERVAL="0.25").queue_poll_interval == 0.25


def test_object_layout_choice(env: dict[str, str]) -> None:
    assert load_with(env, SIDECAR_OBJECT_LAYOUT="flat").object_layout == "flat"
    assert_names(error_for(env, SIDECAR_OBJECT_LAYOUT="nested"), "SIDECAR_OBJECT_LAYOUT")


def test_log_level_is_case_insensitive(env: dict[str, str]) -> None:
    assert load_with(env, SIDECAR_LOG_LEVEL="debug").log_level == "DEBUG"
    assert_names(error_for(env, SIDECAR_LOG_LEVEL="loud"), "SIDECAR_LOG_LEVEL")


def test_every_variable_is_declared_once() -> None:
    names = [v.name for v in config.VARIABLES]
    assert len(names) == len(set(names))
    assert set(REQUIRED) <= set(names)
    assert all(v.name.startswith("SIDECAR_") for v in config.VARIABLES if not v.iterum)


def test_each_variable_is_the_metadata_of_the_settings_field_it_sets() -> None:
    by_name = {f.name: f for f in dataclasses.fields(config.Settings)}
    for v in config.VARIABLES:
        assert by_name[v.attr].metadata["variable"] is v
        assert by_name[v.attr].repr is not v.secret  # a secret stays out of the repr


def test_broker_settings_are_settings_fields_with_the_same_rules(env: dict[str, str]) -> None:
    settings = {f.name: f for f in dataclasses.fields(config.Settings)}
    for f in dataclasses.fields(config.BrokerSettings):
        assert f.type == settings[f.name].type
        assert f.repr == settings[f.name].repr
    full, broker = config.load(env), config.load_broker(env)
    assert broker.dead_letter_queue == full.dead_letter_queue
    assert all(getattr(broker, f.name) == getattr(full, f.name)
               for f in dataclasses.fields(config.BrokerSettings))


def test_core_config_copies_every_field(env: dict[str, str]) -> None:
    """What CoreConfig.from_settings used to spell out, field by field."""
    s = load_with(env, SIDECAR_STUCK_AFTER="7", SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT="0")
    assert config.core_config(s) == CoreConfig(
        volume=s.data_volume_path, step=s.iterum_name, output_bucket=s.minio_output_bucket,
        output_queue=s.mq_output_queue, lineage_queue=s.lineage_queue,
        dead_letter_queue=s.dead_letter_queue, prefetch=s.prefetch,
        queue_mapping=dict(s.queue_mapping), object_layout=s.object_layout,
        transformation_grace=s.transformation_grace,
        transformation_connect_timeout=s.transformation_connect_timeout,
        shutdown_grace=s.shutdown_grace, queue_poll_interval=s.queue_poll_interval,
        publish_attempts=s.publish_attempts, stuck_after=s.stuck_after,
        volume_min_free=s.volume_min_free, pause_when_orphaned=True)
