"""One typed settings object, read once from the environment.

The Iterum variables keep the Go sidecar's names and parsing rules (protocol §2.1);
the sidecar's own knobs are prefixed ``SIDECAR_``. Every variable is declared once in
``VARIABLES``: the parser, the documentation and the generated reference all use it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..core.protocol import InvalidMessage, safe_relative
from . import tls


class ConfigError(Exception):
    """An environment variable is missing or invalid; ``str()`` is one line for the user."""

    def __init__(self, variable: str, problem: str, shown: str | None = None):
        self.variable = variable
        value = f"={shown!r}" if shown is not None else ""
        super().__init__(f"{variable}{value} is not valid: {problem}")


# --- value parsers -------------------------------------------------------------------
# Each takes the raw string and returns the typed value or raises ValueError(problem).

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


# --- the table of variables ----------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    name: str
    attr: str
    parse: Callable[[str], Any]
    default: str | None  # None means required
    doc: str
    secret: bool = False
    iterum: bool = True  # False for the sidecar's own SIDECAR_* settings
    # The value may instead come from the file named by <name>_FILE (a mounted secret),
    # so that it need not sit in the environment.
    file_variant: bool = False

    @property
    def file_name(self) -> str:
        return f"{self.name}_FILE" if self.file_variant else ""


def _iterum(name: str, parse=parse_text, default=None, doc="", secret=False) -> Variable:
    return Variable(name, name.lower(), parse, default, doc, secret, file_variant=secret)


def _own(name: str, parse, default: str, doc: str) -> Variable:
    return Variable(name, name.removeprefix("SIDECAR_").lower(), parse, default, doc,
                    iterum=False)


VARIABLES: tuple[Variable, ...] = (
    _iterum("DATA_VOLUME_PATH", doc="Mount path of the volume shared with the transformation "
            "(an existing directory). Root of the sockets, downloads and config files."),
    _iterum("ITERUM_NAME", doc="Step name (`<hash>-<step>`): the upstream-check URL and "
            "`transformation_step` in lineage."),
    _iterum("PIPELINE_HASH", doc="Pipeline run hash: lineage queue `<hash>-lineage`, config "
            "bucket `<hash>-iterum-config`, upstream-check URL."),
    _iterum("ITERUM_CONFIG", default="", parse=str, doc="Step configuration (JSON object). "
            "The sidecar reads `queue_mapping` (output_channel → queue) and `config_files` "
            "(alias → file name); other keys are for the transformation."),
    _iterum("ITERUM_CONFIG_PATH", doc="Config-file directory, relative to "
            "DATA_VOLUME_PATH (the manager sets `config`); it must name a directory below "
            "the volume, as in the original."),
    _iterum("MINIO_URL", doc="S3/MinIO endpoint as `host:port`, without a scheme."),
    _iterum("MINIO_ACCESS_KEY", doc="S3 access key. Or MINIO_ACCESS_KEY_FILE: the path of a "
            "file holding it (a mounted secret; read once, trailing newline stripped).",
            secret=True),
    _iterum("MINIO_SECRET_KEY", doc="S3 secret key. Or MINIO_SECRET_KEY_FILE: the path of a "
            "file holding it.", secret=True),
    _iterum("MINIO_USE_SSL", parse=parse_go_bool, default="false",
            doc="Use HTTPS for S3 (Go ParseBool syntax: 1, t, true, 0, f, false, ...). The "
            "server's certificate is verified, against SIDECAR_S3_CA_FILE if set."),
    _iterum("MINIO_OUTPUT_BUCKET", doc="Bucket for output files (created if missing)."),
    _iterum("MQ_BROKER_URL", doc="AMQP URL, e.g. `amqp://user:password@host:5672/`; "
            "`amqps://` for TLS (see SIDECAR_AMQP_CA_FILE). Or MQ_BROKER_URL_FILE: the path "
            "of a file holding it.", secret=True),
    _iterum("MQ_INPUT_QUEUE", doc="Queue the sidecar consumes RemoteFragmentDescs from."),
    _iterum("MQ_OUTPUT_QUEUE", doc="Default queue for output descriptors."),
    _iterum("MQ_PREFETCH_COUNT", parse=parse_prefetch, default="",
            doc="Per-consumer prefetch. Unset, empty or 0 means SIDECAR_DEFAULT_PREFETCH "
            "(the original sent no QoS at all; an unbounded prefetch could fill the volume)."),
    _iterum("MANAGER_URL", doc="Manager base URL for the upstream check. A value containing "
            "`dummy` selects the built-in dummy checker (finished after 5 polls)."),
    _iterum("TRANSFORMATION_STEP_INPUT", doc="Socket to the transformation, joined to "
            "DATA_VOLUME_PATH; must end in `.sock` (the manager sets `tts.sock`)."),
    _iterum("TRANSFORMATION_STEP_OUTPUT", doc="Socket from the transformation, joined to "
            "DATA_VOLUME_PATH; must end in `.sock` (the manager sets `fts.sock`)."),
    _own("SIDECAR_DEFAULT_PREFETCH", positive_int, "16",
         "Prefetch used when MQ_PREFETCH_COUNT is unset or 0; bounds fragments in flight."),
    _own("SIDECAR_STORAGE_WORKERS", positive_int, "8",
         "Threads for S3 transfers (one file per thread at a time; a fragment's files go "
         "to one thread, shared with idle ones) and for deleting local files."),
    _own("SIDECAR_STORAGE_ATTEMPTS", positive_int, "6",
         "Attempts per S3 operation on transient errors (5xx, SlowDown, reset, timeout)."),
    _own("SIDECAR_STORAGE_BACKOFF_MAX", seconds, "20",
         "Upper bound of the jittered exponential backoff between S3 attempts, in seconds."),
    _own("SIDECAR_STORAGE_TIMEOUT", seconds, "60",
         "Connect and read timeout of one S3 request, in seconds."),
    _own("SIDECAR_S3_REGION", parse_text, "us-east-1",
         "Region sent to S3; fixing it saves a GetBucketLocation request per bucket."),
    _own("SIDECAR_PART_SIZE", byte_size, "16MiB",
         "Files larger than this are uploaded in parts of this size (min 5MiB)."),
    _own("SIDECAR_S3_SMALL_OBJECTS", choice("direct", "minio"), "direct",
         "Client for downloads and for uploads up to SIDECAR_PART_SIZE: `direct` (the "
         "sidecar's own signed GET/PUT on the minio client's connections, 0.1-0.15 ms less "
         "CPU per request) or `minio` (the minio client, as before). Multipart and bucket "
         "checks always use minio. `direct` needs minio's private internals: if they are "
         "not as expected, a warning says so and `minio` is used."),
    _own("SIDECAR_OBJECT_LAYOUT", choice("per-fragment", "flat"), "per-fragment",
         "Output object keys: `iterum_data/<fragment_id>/<name>` (per-fragment, no "
         "collisions) or the original's `iterum_data/<name>` (flat)."),
    _own("SIDECAR_MAX_FRAME_BYTES", byte_size, "64MiB",
         "Largest frame accepted from the transformation; a larger header drops that "
         "connection."),
    _own("SIDECAR_TRANSFORMATION_GRACE", seconds, "60",
         "How long to wait for the transformation to reconnect after all its connections "
         "closed without a kill message, before giving the inputs back and exiting 3."),
    _own("SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT", seconds_or_off, "600",
         "How long to wait at start-up for the transformation's first connection; if "
         "none came, the inputs are given back and the sidecar exits 3. `0`: wait forever "
         "(as the original did)."),
    _own("SIDECAR_SHUTDOWN_GRACE", seconds, "20",
         "After SIGTERM: how long in-flight fragments may take to finish before the rest "
         "is given back to the broker (nack, requeue) and the sidecar exits 0."),
    _own("SIDECAR_MANAGER_POLL_INTERVAL", seconds, "5",
         "Seconds between upstream-finished polls of the manager (and of the dummy checker)."),
    _own("SIDECAR_MANAGER_RETRY_SECONDS", seconds, "120",
         "How long manager failures (unreachable, 404, 409, 5xx, bad JSON) are retried "
         "before the sidecar exits 1."),
    _own("SIDECAR_BROKER_RETRY_SECONDS", seconds, "180",
         "How long the sidecar tries to reach RabbitMQ (at start, and after a lost "
         "connection: jittered exponential backoff, in-flight work kept) before it exits 1. "
         "Unacked inputs return to the queue either way (docs/reliability.md)."),
    _own("SIDECAR_QUEUE_POLL_INTERVAL", seconds, "1",
         "Seconds between input-queue checks once the upstream has finished."),
    _own("SIDECAR_CONFIG_FILE_TIMEOUT", seconds, "600",
         "How long to wait for each config file to appear in the config bucket before "
         "exiting 1."),
    _own("SIDECAR_PUBLISH_ATTEMPTS", positive_int, "5",
         "Publishes of one message the broker may refuse (nack or return) before its "
         "fragment is given up."),
    _own("SIDECAR_LOG_LEVEL", log_level, "INFO", "Log level: DEBUG, INFO, WARNING, ERROR."),
    _own("SIDECAR_JOURNAL", choice("on", "off"), "on",
         "Record every event the core consumes to a journal, for `iterum-sidecar replay` "
         "(docs/debugging.md): `on` or `off`."),
    _own("SIDECAR_JOURNAL_DIR", parse_text, ".sidecar/journal",
         "Directory of the journal; a relative path is taken below DATA_VOLUME_PATH. The "
         "sidecar's cleanup never touches it."),
    _own("SIDECAR_JOURNAL_MAX_BYTES", byte_size, "32MiB",
         "Size at which a journal segment is closed and a new one (starting with a "
         "checkpoint of the core's state) begins."),
    _own("SIDECAR_JOURNAL_SEGMENTS", positive_int, "4",
         "Journal segments kept in the directory (older ones are deleted): the journal "
         "uses at most this many times SIDECAR_JOURNAL_MAX_BYTES."),
    # --- operations (docs/operations.md) ---
    _own("SIDECAR_LOG_FORMAT", choice("auto", "json", "text"), "auto",
         "`json`: one JSON object per line; `text`: readable lines; `auto`: JSON unless "
         "stderr is a terminal (so JSON in a container)."),
    _own("SIDECAR_HTTP_PORT", http_port, "9090",
         "Port of the HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz`, "
         "`/debug/fragments`. `auto`: any free port, which the `http:` log line names "
         "(several sidecars on one host); `0` switches it off. A port already taken ends "
         "the start (exit 1)."),
    _own("SIDECAR_HTTP_HOST", parse_text, "0.0.0.0",
         "Address the HTTP endpoint listens on (the pod IP must be reachable for probes "
         "and scraping; `127.0.0.1` keeps it local)."),
    _own("SIDECAR_STUCK_AFTER", seconds_or_off, "300",
         "A fragment longer than this in one lifecycle state is logged (`stuck-...`) and "
         "counted, once per state it is stuck in. `0` switches it off."),
    _own("SIDECAR_VOLUME_MIN_FREE", byte_size_or_off, "256MiB",
         "Below this much free space on DATA_VOLUME_PATH the sidecar stops consuming; it "
         "resumes at 25% above it. `0` switches it off."),
    _own("SIDECAR_VOLUME_CHECK_INTERVAL", seconds, "5",
         "Seconds between measurements of the volume's free space."),
    _own("SIDECAR_OPENLINEAGE", choice("off", "console", "file", "http"), "off",
         "Also emit OpenLineage run events per output fragment (docs/openlineage.md): "
         "`console` (the log), `file` (JSON lines) or `http` (an OpenLineage backend). "
         "Needs the `openlineage` extra."),
    _own("SIDECAR_OPENLINEAGE_URL", str, "",
         "For `file`: the path of the JSON-lines file (appended to). For `http`: the "
         "backend's base URL, e.g. `http://marquez:5000`."),
    _own("SIDECAR_OPENLINEAGE_NAMESPACE", parse_text, "iterum",
         "OpenLineage job namespace of the step's runs."),
    Variable("SIDECAR_OPENLINEAGE_API_KEY", "openlineage_api_key", str, "",
             "Bearer API key for the `http` transport (optional).", secret=True,
             iterum=False),
    # --- security (docs/reliability.md, "Security") ---
    _own("SIDECAR_SOCKET_MODE", file_mode, "0660",
         "Permission bits (octal) of tts.sock and fts.sock: who may connect. The default "
         "lets the sidecar's uid and group in (see docs/migration.md for the uid model)."),
    _own("SIDECAR_PEER_UID", optional_uid, "",
         "If set, only a process with this uid may connect to the sockets (checked with "
         "SO_PEERCRED at accept); another uid is refused, logged and counted. Empty: no "
         "check."),
    _own("SIDECAR_AMQP_CA_FILE", path_or_empty, "",
         "PEM file of the CA(s) that signed the broker's certificate, for an `amqps://` "
         "MQ_BROKER_URL. Empty: the system's CAs."),
    _own("SIDECAR_AMQP_CERT_FILE", path_or_empty, "",
         "PEM client certificate presented to the broker (`amqps://`), for brokers that "
         "require one. Its key in SIDECAR_AMQP_KEY_FILE, or in the same file."),
    _own("SIDECAR_AMQP_KEY_FILE", path_or_empty, "",
         "PEM private key of SIDECAR_AMQP_CERT_FILE (unencrypted)."),
    _own("SIDECAR_S3_CA_FILE", path_or_empty, "",
         "PEM CA bundle that S3's certificate is verified against (with MINIO_USE_SSL). "
         "Empty: the system's CAs."),
)


@dataclass(frozen=True)
class Settings:
    # Iterum variables (§2.1)
    data_volume_path: str
    iterum_name: str
    pipeline_hash: str
    iterum_config: str
    iterum_config_path: str
    minio_url: str
    minio_access_key: str = field(repr=False)
    minio_secret_key: str = field(repr=False)
    minio_use_ssl: bool
    minio_output_bucket: str
    mq_broker_url: str = field(repr=False)
    mq_input_queue: str
    mq_output_queue: str
    mq_prefetch_count: int
    manager_url: str
    transformation_step_input: str
    transformation_step_output: str
    # sidecar knobs
    default_prefetch: int
    storage_workers: int
    storage_attempts: int
    storage_backoff_max: float
    storage_timeout: float
    s3_region: str
    part_size: int
    object_layout: str
    max_frame_bytes: int
    transformation_grace: float
    shutdown_grace: float
    manager_poll_interval: float
    manager_retry_seconds: float
    broker_retry_seconds: float
    queue_poll_interval: float
    config_file_timeout: float
    publish_attempts: int
    log_level: str
    log_format: str
    http_port: int
    http_host: str
    stuck_after: float
    volume_min_free: int
    volume_check_interval: float
    openlineage: str
    openlineage_url: str
    openlineage_namespace: str
    openlineage_api_key: str = field(repr=False)
    # derived
    queue_mapping: Mapping[str, str]
    config_files: Mapping[str, str]
    config_dir: str
    tts_path: str
    fts_path: str
    # the journal (sidecar/shell/journal.py); defaults so that a Settings built by hand needs none
    journal: str = "on"
    journal_dir: str = ".sidecar/journal"
    journal_max_bytes: int = 32 << 20
    journal_segments: int = 4
    # security and start-up (defaults so that a Settings built by hand needs none)
    transformation_connect_timeout: float = 600.0
    socket_mode: int = 0o660
    peer_uid: int | None = None
    amqp_ca_file: str = ""
    amqp_cert_file: str = ""
    amqp_key_file: str = ""
    s3_ca_file: str = ""
    # S3 client for GETs and single PUTs (sidecar/shell/io/s3direct.py)
    s3_small_objects: str = "direct"
    # what the configuration wants said once logging is up (never a secret)
    notices: tuple[str, ...] = ()

    @property
    def prefetch(self) -> int:
        """§16.10: the Iterum value when > 0, otherwise a finite default."""
        return self.mq_prefetch_count if self.mq_prefetch_count > 0 else self.default_prefetch

    @property
    def lineage_queue(self) -> str:
        return f"{self.pipeline_hash}-lineage"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.mq_input_queue}-dead"

    @property
    def config_bucket(self) -> str:
        return f"{self.pipeline_hash}-iterum-config"

    @property
    def journal_enabled(self) -> bool:
        return self.journal == "on"

    @property
    def journal_path(self) -> str:
        if posixpath.isabs(self.journal_dir):
            return posixpath.normpath(self.journal_dir)
        return join_under(self.data_volume_path, self.journal_dir)

    @property
    def dummy_manager(self) -> bool:
        return "dummy" in self.manager_url

    @property
    def upstream_url(self) -> str:
        return (f"{self.manager_url}/pipeline/{self.pipeline_hash}/{self.iterum_name}"
                "/upstream_finished")


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate every variable; raise ConfigError naming the first bad one."""
    env = os.environ if environ is None else environ
    notices: list[str] = []
    values: dict[str, Any] = {var.attr: value(var, env, notices) for var in VARIABLES}
    values.update(_derived(values))
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


@dataclass(frozen=True)
class BrokerSettings:
    """What `iterum-sidecar dead-letters` needs: the broker and the input queue."""

    mq_broker_url: str = field(repr=False)
    mq_input_queue: str
    amqp_ca_file: str = ""
    amqp_cert_file: str = ""
    amqp_key_file: str = ""

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.mq_input_queue}-dead"


_BROKER_VARIABLES = ("MQ_BROKER_URL", "MQ_INPUT_QUEUE", "SIDECAR_AMQP_CA_FILE",
                     "SIDECAR_AMQP_CERT_FILE", "SIDECAR_AMQP_KEY_FILE")


def load_broker(environ: Mapping[str, str] | None = None) -> BrokerSettings:
    """Only the broker's variables (with the same rules and _FILE variants as load())."""
    env = os.environ if environ is None else environ
    by_name = {v.name: v for v in VARIABLES}
    values = {by_name[n].attr: value(by_name[n], env) for n in _BROKER_VARIABLES}
    _check_broker_url(values["mq_broker_url"])
    check_amqp_tls(urlsplit(values["mq_broker_url"]).scheme == "amqps",
                   values["amqp_ca_file"], values["amqp_cert_file"], values["amqp_key_file"])
    return BrokerSettings(**values)


def known_names() -> set[str]:
    """Every environment variable the sidecar reads, _FILE variants included."""
    return {v.name for v in VARIABLES} | {v.file_name for v in VARIABLES if v.file_variant}


def _derived(v: dict[str, Any]) -> dict[str, Any]:
    volume = v["data_volume_path"] = os.path.abspath(v["data_volume_path"])
    if not os.path.isdir(volume):
        raise ConfigError("DATA_VOLUME_PATH", "no such directory", volume)
    if "://" in v["minio_url"]:
        raise ConfigError("MINIO_URL", "give host:port without a scheme", v["minio_url"])
    _check_broker_url(v["mq_broker_url"])
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


def _check_broker_url(url: str) -> None:
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
