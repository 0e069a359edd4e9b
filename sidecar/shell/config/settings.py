"""The variable table: one typed ``Settings`` field per environment variable.

Each field carries its variable (name, parser, default, documentation) in its metadata, so
a variable is declared once: ``load()``, the _FILE variants, the secrets filter, the
generated reference (docs/configuration.md) and the deploy checks all read ``VARIABLES``,
which is derived from these fields; mypy and a reader see each attribute's type next to it.
The Iterum variables keep the Go sidecar's names and parsing rules (protocol §2.1); the
sidecar's own knobs are prefixed ``SIDECAR_``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast

from .checks import join_under
from .parsing import (
    byte_size,
    byte_size_or_off,
    choice,
    file_mode,
    optional_uid,
    parse_go_bool,
    parse_prefetch,
    parse_text,
    path_or_empty,
    positive_int,
    seconds,
    seconds_or_off,
)
from .parsing import http_port as parse_http_port
from .parsing import log_level as parse_log_level

T = TypeVar("T")
REQUIRED = None  # the default of a variable that must be set
_KEY = "variable"  # the metadata key of a Settings field that a variable sets


@dataclass(frozen=True)
class Variable:
    """One environment variable: how it is parsed and documented, and the attribute it sets.
    (Each dataclass here has a docstring, which also spares building one at import.)"""

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


def iterum(name: str, parse: Callable[[str], T], default: str | None, doc: str,
           secret: bool = False) -> T:
    """The field of an Iterum variable (attribute ``name.lower()``); a secret one may come
    from <name>_FILE instead. Typed as the parsed value so that mypy checks the parser
    against the field's annotation."""
    return _field(Variable(name, name.lower(), parse, default, doc, secret,
                           file_variant=secret))


def own(name: str, parse: Callable[[str], T], default: str, doc: str,
        secret: bool = False) -> T:
    """The field of a SIDECAR_* variable (attribute: the name without the prefix, lower)."""
    return _field(Variable(name, name.removeprefix("SIDECAR_").lower(), parse, default, doc,
                           secret, iterum=False))


def _field(var: Variable) -> Any:
    # No default: load() sets every field. A secret is left out of the repr.
    return field(repr=not var.secret, metadata={_KEY: var})


class _InputQueueNames:
    """What is derived from the input queue's name, for Settings and BrokerSettings."""

    mq_input_queue: str

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.mq_input_queue}-dead"


@dataclass(frozen=True, kw_only=True)
class Settings(_InputQueueNames):
    """The sidecar's configuration; ``load()`` makes the only instance."""

    # --- Iterum variables (§2.1), in the order of the reference ---
    data_volume_path: str = iterum(
        "DATA_VOLUME_PATH", parse_text, REQUIRED,
        "Mount path of the volume shared with the transformation (an existing directory). Root of "
        "the sockets, downloads and config files.")
    iterum_name: str = iterum(
        "ITERUM_NAME", parse_text, REQUIRED,
        "Step name (`<hash>-<step>`): the upstream-check URL and `transformation_step` in lineage.")
    pipeline_hash: str = iterum(
        "PIPELINE_HASH", parse_text, REQUIRED,
        "Pipeline run hash: lineage queue `<hash>-lineage`, config bucket `<hash>-iterum-config`, "
        "upstream-check URL.")
    iterum_config: str = iterum(
        "ITERUM_CONFIG", str, "",
        "Step configuration (JSON object). The sidecar reads `queue_mapping` (output_channel → "
        "queue) and `config_files` (alias → file name); other keys are for the transformation.")
    iterum_config_path: str = iterum(
        "ITERUM_CONFIG_PATH", parse_text, REQUIRED,
        "Config-file directory, relative to DATA_VOLUME_PATH (the manager sets `config`); it must "
        "name a directory below the volume, as in the original.")
    minio_url: str = iterum(
        "MINIO_URL", parse_text, REQUIRED,
        "S3/MinIO endpoint as `host:port`, without a scheme.")
    minio_access_key: str = iterum(
        "MINIO_ACCESS_KEY", parse_text, REQUIRED,
        "S3 access key. Or MINIO_ACCESS_KEY_FILE: the path of a file holding it (a mounted secret; "
        "read once, trailing newline stripped).", secret=True)
    minio_secret_key: str = iterum(
        "MINIO_SECRET_KEY", parse_text, REQUIRED,
        "S3 secret key. Or MINIO_SECRET_KEY_FILE: the path of a file holding it.", secret=True)
    minio_use_ssl: bool = iterum(
        "MINIO_USE_SSL", parse_go_bool, "false",
        "Use HTTPS for S3 (Go ParseBool syntax: 1, t, true, 0, f, false, ...). The server's "
        "certificate is verified, against SIDECAR_S3_CA_FILE if set.")
    minio_output_bucket: str = iterum(
        "MINIO_OUTPUT_BUCKET", parse_text, REQUIRED,
        "Bucket for output files (created if missing).")
    mq_broker_url: str = iterum(
        "MQ_BROKER_URL", parse_text, REQUIRED,
        "AMQP URL, e.g. `amqp://user:password@host:5672/`; `amqps://` for TLS (see "
        "SIDECAR_AMQP_CA_FILE). Or MQ_BROKER_URL_FILE: the path of a file holding it.", secret=True)
    mq_input_queue: str = iterum(
        "MQ_INPUT_QUEUE", parse_text, REQUIRED,
        "Queue the sidecar consumes RemoteFragmentDescs from.")
    mq_output_queue: str = iterum(
        "MQ_OUTPUT_QUEUE", parse_text, REQUIRED,
        "Default queue for output descriptors.")
    mq_prefetch_count: int = iterum(
        "MQ_PREFETCH_COUNT", parse_prefetch, "",
        "Per-consumer prefetch. Unset, empty or 0 means SIDECAR_DEFAULT_PREFETCH (the original "
        "sent no QoS at all; an unbounded prefetch could fill the volume).")
    manager_url: str = iterum(
        "MANAGER_URL", parse_text, REQUIRED,
        "Manager base URL for the upstream check. A value containing `dummy` selects the built-in "
        "dummy checker (finished after 5 polls).")
    transformation_step_input: str = iterum(
        "TRANSFORMATION_STEP_INPUT", parse_text, REQUIRED,
        "Socket to the transformation, joined to DATA_VOLUME_PATH; must end in `.sock` (the "
        "manager sets `tts.sock`).")
    transformation_step_output: str = iterum(
        "TRANSFORMATION_STEP_OUTPUT", parse_text, REQUIRED,
        "Socket from the transformation, joined to DATA_VOLUME_PATH; must end in `.sock` (the "
        "manager sets `fts.sock`).")
    # --- the sidecar's own knobs ---
    default_prefetch: int = own(
        "SIDECAR_DEFAULT_PREFETCH", positive_int, "16",
        "Prefetch used when MQ_PREFETCH_COUNT is unset or 0; bounds fragments in flight.")
    storage_workers: int = own(
        "SIDECAR_STORAGE_WORKERS", positive_int, "8",
        "Threads for S3 transfers (one file per thread at a time; a fragment's files go to one "
        "thread, shared with idle ones) and for deleting local files.")
    cpu_affinity: str = own(
        "SIDECAR_CPU_AFFINITY", choice('auto', 'one', 'all'), "auto",
        "`auto`: keep every thread on the CPU the sidecar starts on when its cgroup may use at "
        "most one CPU's time (a CPU limit of 1 or less); `one`: always; `all`: never, the "
        "scheduler places them. Under a CPU limit this saves CPU per fragment "
        "(docs/operations.md).")
    storage_attempts: int = own(
        "SIDECAR_STORAGE_ATTEMPTS", positive_int, "6",
        "Attempts per S3 operation on transient errors (5xx, SlowDown, reset, timeout).")
    storage_backoff_max: float = own(
        "SIDECAR_STORAGE_BACKOFF_MAX", seconds, "20",
        "Upper bound of the jittered exponential backoff between S3 attempts, in seconds.")
    storage_timeout: float = own(
        "SIDECAR_STORAGE_TIMEOUT", seconds, "60",
        "Connect and read timeout of one S3 request, in seconds.")
    s3_region: str = own(
        "SIDECAR_S3_REGION", parse_text, "us-east-1",
        "Region sent to S3; fixing it saves a GetBucketLocation request per bucket.")
    part_size: int = own(
        "SIDECAR_PART_SIZE", byte_size, "16MiB",
        "Files larger than this are uploaded in parts of this size (min 5MiB).")
    s3_small_objects: str = own(
        "SIDECAR_S3_SMALL_OBJECTS", choice('direct', 'minio'), "direct",
        "Client for downloads, uploads up to SIDECAR_PART_SIZE and the output bucket's check "
        "and creation: `direct` (the sidecar's own signed requests on the connections minio's "
        "client gets, 0.1-0.15 ms less CPU per request; the client is made only for multipart "
        "uploads) or `minio` (the minio client, as before). `direct` needs some of "
        "minio's private helpers: if they are not as expected, a warning says so and `minio` "
        "is used.")
    object_layout: str = own(
        "SIDECAR_OBJECT_LAYOUT", choice('per-fragment', 'flat'), "per-fragment",
        "Output object keys: `iterum_data/<fragment_id>/<name>` (per-fragment, no collisions) or "
        "the original's `iterum_data/<name>` (flat).")
    max_frame_bytes: int = own(
        "SIDECAR_MAX_FRAME_BYTES", byte_size, "64MiB",
        "Largest frame accepted from the transformation; a larger header drops that connection.")
    transformation_grace: float = own(
        "SIDECAR_TRANSFORMATION_GRACE", seconds, "60",
        "How long to wait for the transformation to reconnect after all its connections closed "
        "without a kill message, before giving the inputs back and exiting 3.")
    transformation_connect_timeout: float = own(
        "SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT", seconds_or_off, "600",
        "How long to wait at start-up for the transformation's first connection; if none came, the "
        "inputs are given back and the sidecar exits 3. `0`: wait forever (as the original did).")
    shutdown_grace: float = own(
        "SIDECAR_SHUTDOWN_GRACE", seconds, "20",
        "After SIGTERM: how long in-flight fragments may take to finish before the rest is given "
        "back to the broker (nack, requeue) and the sidecar exits 0.")
    manager_poll_interval: float = own(
        "SIDECAR_MANAGER_POLL_INTERVAL", seconds, "5",
        "Seconds between upstream-finished polls of the manager (and of the dummy checker).")
    manager_retry_seconds: float = own(
        "SIDECAR_MANAGER_RETRY_SECONDS", seconds, "120",
        "How long manager failures (unreachable, 404, 409, 5xx, bad JSON) are retried before the "
        "sidecar exits 1.")
    broker_retry_seconds: float = own(
        "SIDECAR_BROKER_RETRY_SECONDS", seconds, "180",
        "How long the sidecar tries to reach RabbitMQ (at start, and after a lost connection: "
        "jittered exponential backoff, in-flight work kept) before it exits 1. Unacked inputs "
        "return to the queue either way (docs/reliability.md).")
    queue_poll_interval: float = own(
        "SIDECAR_QUEUE_POLL_INTERVAL", seconds, "1",
        "Seconds between input-queue checks once the upstream has finished.")
    config_file_timeout: float = own(
        "SIDECAR_CONFIG_FILE_TIMEOUT", seconds, "600",
        "How long to wait for each config file to appear in the config bucket before exiting 1.")
    publish_attempts: int = own(
        "SIDECAR_PUBLISH_ATTEMPTS", positive_int, "5",
        "Publishes of one message the broker may refuse (nack or return) before its fragment is "
        "given up.")
    log_level: str = own(
        "SIDECAR_LOG_LEVEL", parse_log_level, "INFO",
        "Log level: DEBUG, INFO, WARNING, ERROR.")
    journal: str = own(
        "SIDECAR_JOURNAL", choice('on', 'off'), "on",
        "Record every event the core consumes to a journal, for `iterum-sidecar replay` "
        "(docs/debugging.md): `on` or `off`.")
    journal_dir: str = own(
        "SIDECAR_JOURNAL_DIR", parse_text, ".sidecar/journal",
        "Directory of the journal; a relative path is taken below DATA_VOLUME_PATH. The sidecar's "
        "cleanup never touches it.")
    journal_max_bytes: int = own(
        "SIDECAR_JOURNAL_MAX_BYTES", byte_size, "32MiB",
        "Size at which a journal segment is closed and a new one (starting with a checkpoint of "
        "the core's state) begins.")
    journal_segments: int = own(
        "SIDECAR_JOURNAL_SEGMENTS", positive_int, "4",
        "Journal segments kept in the directory (older ones are deleted): the journal uses at most "
        "this many times SIDECAR_JOURNAL_MAX_BYTES.")
    # --- operations (docs/operations.md) ---
    log_format: str = own(
        "SIDECAR_LOG_FORMAT", choice('auto', 'json', 'text'), "auto",
        "`json`: one JSON object per line; `text`: readable lines; `auto`: JSON unless stderr is a "
        "terminal (so JSON in a container).")
    http_port: int = own(
        "SIDECAR_HTTP_PORT", parse_http_port, "9090",
        "Port of the HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz`, "
        "`/debug/fragments`. `auto`: any free port, which the `http:` log line names (several "
        "sidecars on one host); `0` switches it off. A port already taken ends the start (exit 1).")
    http_host: str = own(
        "SIDECAR_HTTP_HOST", parse_text, "0.0.0.0",
        "Address the HTTP endpoint listens on (the pod IP must be reachable for probes and "
        "scraping; `127.0.0.1` keeps it local).")
    stuck_after: float = own(
        "SIDECAR_STUCK_AFTER", seconds_or_off, "300",
        "A fragment longer than this in one lifecycle state is logged (`stuck-...`) and counted, "
        "once per state it is stuck in. `0` switches it off.")
    volume_min_free: int = own(
        "SIDECAR_VOLUME_MIN_FREE", byte_size_or_off, "256MiB",
        "Below this much free space on DATA_VOLUME_PATH the sidecar stops consuming; it resumes at "
        "25% above it. `0` switches it off.")
    volume_check_interval: float = own(
        "SIDECAR_VOLUME_CHECK_INTERVAL", seconds, "5",
        "Seconds between measurements of the volume's free space.")
    openlineage: str = own(
        "SIDECAR_OPENLINEAGE", choice('off', 'console', 'file', 'http'), "off",
        "Also emit OpenLineage run events per output fragment (docs/openlineage.md): `console` "
        "(the log), `file` (JSON lines) or `http` (an OpenLineage backend). Needs the "
        "`openlineage` extra.")
    openlineage_url: str = own(
        "SIDECAR_OPENLINEAGE_URL", str, "",
        "For `file`: the path of the JSON-lines file (appended to). For `http`: the backend's base "
        "URL, e.g. `http://marquez:5000`.")
    openlineage_namespace: str = own(
        "SIDECAR_OPENLINEAGE_NAMESPACE", parse_text, "iterum",
        "OpenLineage job namespace of the step's runs.")
    openlineage_api_key: str = own(
        "SIDECAR_OPENLINEAGE_API_KEY", str, "",
        "Bearer API key for the `http` transport (optional).", secret=True)
    # --- security (docs/reliability.md, "Security") ---
    socket_mode: int = own(
        "SIDECAR_SOCKET_MODE", file_mode, "0660",
        "Permission bits (octal) of tts.sock and fts.sock: who may connect. The default lets the "
        "sidecar's uid and group in (see docs/migration.md for the uid model).")
    peer_uid: int | None = own(
        "SIDECAR_PEER_UID", optional_uid, "",
        "If set, only a process with this uid may connect to the sockets (checked with SO_PEERCRED "
        "at accept); another uid is refused, logged and counted. Empty: no check.")
    amqp_ca_file: str = own(
        "SIDECAR_AMQP_CA_FILE", path_or_empty, "",
        "PEM file of the CA(s) that signed the broker's certificate, for an `amqps://` "
        "MQ_BROKER_URL. Empty: the system's CAs.")
    amqp_cert_file: str = own(
        "SIDECAR_AMQP_CERT_FILE", path_or_empty, "",
        "PEM client certificate presented to the broker (`amqps://`), for brokers that require "
        "one. Its key in SIDECAR_AMQP_KEY_FILE, or in the same file.")
    amqp_key_file: str = own(
        "SIDECAR_AMQP_KEY_FILE", path_or_empty, "",
        "PEM private key of SIDECAR_AMQP_CERT_FILE (unencrypted).")
    s3_ca_file: str = own(
        "SIDECAR_S3_CA_FILE", path_or_empty, "",
        "PEM CA bundle that S3's certificate is verified against (with MINIO_USE_SSL). Empty: the "
        "system's CAs.")
    # --- derived by load() from the variables above (checks.derived) ---
    queue_mapping: Mapping[str, str]
    config_files: Mapping[str, str]
    config_dir: str
    tts_path: str
    fts_path: str
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


def _variables() -> tuple[Variable, ...]:
    """The table, in field order (the order of load()'s checks and of the reference)."""
    table = []
    for f in fields(Settings):
        var = cast("Variable | None", f.metadata.get(_KEY))
        if var is not None and var.attr != f.name:  # load() would set another attribute
            raise TypeError(f"Settings.{f.name} is set by {var.name}: name it {var.attr}")
        if var is not None:
            table.append(var)
    return tuple(table)


VARIABLES: tuple[Variable, ...] = _variables()


@dataclass(frozen=True, kw_only=True)
class BrokerSettings(_InputQueueNames):
    """What `iterum-sidecar dead-letters` needs: the broker and the input queue. Each field
    is read by the variable of the Settings field of the same name (load_broker)."""

    mq_broker_url: str = field(repr=False)
    mq_input_queue: str
    amqp_ca_file: str
    amqp_cert_file: str
    amqp_key_file: str
