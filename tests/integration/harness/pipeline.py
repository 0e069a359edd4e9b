"""One pipeline step per test: names, environments, inputs, and the two processes.

The names follow the manager (protocol §2.2, §15): queues `<hash>-<channel>`, buckets
`<hash>-fragmenter-output` (inputs, as the fragmenter-sidecar writes them, §14.1) and
`<hash>-<step>-output` (outputs), ITERUM_NAME `<hash>-<step>`. The random hash keeps tests
apart on the shared broker and the process-wide moto backend.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sidecar.shell.http import LISTENING_PORT

from .manager import FakeManager
from .rabbit import DEFAULT_URL, Message, Rabbit
from .s3 import S3Server

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "sidecar" / "tools" / "examples"
TRANSFORMATIONS = Path(__file__).resolve().parents[1] / "transformations"
ALPHABET = string.ascii_lowercase + string.digits
_rng = random.SystemRandom()

# Sidecar knobs the harness sets so tests run in seconds, not minutes (override per test).
# SIDECAR_TRANSFORMATION_GRACE stays above pyterum's fixed 5 s reconnect sleep.
FAST_SIDECAR_ENV = {
    "SIDECAR_MANAGER_POLL_INTERVAL": "0.2",
    "SIDECAR_QUEUE_POLL_INTERVAL": "0.2",
    "SIDECAR_MANAGER_RETRY_SECONDS": "10",
    "SIDECAR_STORAGE_BACKOFF_MAX": "0.5",
    "SIDECAR_STORAGE_TIMEOUT": "10",
    "SIDECAR_CONFIG_FILE_TIMEOUT": "30",
    "SIDECAR_TRANSFORMATION_GRACE": "12",
    "SIDECAR_SHUTDOWN_GRACE": "10",
    "SIDECAR_LOG_LEVEL": "DEBUG",
    "SIDECAR_LOG_FORMAT": "text",  # the tests read `<time> LEVEL logger: message` lines
    "SIDECAR_HTTP_HOST": "127.0.0.1",  # SIDECAR_HTTP_PORT: auto, a free port per sidecar
}
# Variables a developer's shell might have set that must not leak into the children
# (ENC_MSG_SIZE_LENGTH set at all breaks pyterum, protocol §2.3).
_SCRUB = re.compile(r"^(ITERUM_|MINIO_|MQ_|SIDECAR_|TRANSFORMATION_STEP_|FRAGMENTER_|DAEMON_)"
                    r"|^(DATA_VOLUME_PATH|PIPELINE_HASH|MANAGER_URL|ENC_MSG_SIZE_LENGTH)$")


def random_id(length: int = 64) -> str:
    """An IterumID (64 chars of [a-z0-9]) or, with length=32, a pipeline hash."""
    return "".join(_rng.choice(ALPHABET) for _ in range(length))


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _SCRUB.match(k)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A child process whose stdout/stderr go to files; kill() ends its process group."""

    _all: list[Proc] = []  # every process the harness started, for the session cleanup

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
                 log_dir: Path):
        self.name = name
        self.cwd = cwd
        # a sidecar's HTTP endpoint: "" when off, None until its log names the port
        self._http_url: str | None = ""
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        Proc._all.append(self)

    @property
    def http_url(self) -> str:
        """The sidecar's HTTP endpoint; with SIDECAR_HTTP_PORT=auto, the port its `http:`
        log line names (waited for)."""
        if self._http_url is None:
            port = self.wait_for_log(LISTENING_PORT.pattern, timeout=30).group(1)
            self._http_url = f"http://127.0.0.1:{port}"
        return self._http_url

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def logs(self) -> str:
        return self.stdout + self.stderr

    def tail(self, lines: int = 40, exclude: str | None = r" transitions\.core: ") -> str:
        """The last log lines, without the state-machine library's chatter by default."""
        kept = [ln for ln in self.logs.splitlines() if not (exclude and re.search(exclude, ln))]
        return f"--- {self.name} (pid {self.pid}, exit {self.returncode}) ---\n" + "\n".join(
            kept[-lines:])

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the exit and return the code; TimeoutError (with the log tail) if not."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still running after {timeout}s\n"
                               f"{self.tail()}") from None

    def expect_exit(self, code: int = 0, timeout: float = 60.0) -> None:
        got = self.wait(timeout)
        assert got == code, f"{self.name} exited {got}, expected {code}\n{self.tail()}"

    def wait_for_log(self, pattern: str, timeout: float = 30.0, poll: float = 0.05
                     ) -> re.Match:
        """Wait until a regex matches the logs (stdout+stderr), looking every ``poll`` s."""
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.logs)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} not in {self.name}'s logs after {timeout}s\n"
                                   f"{self.tail()}")
            if not self.alive:  # one last look: it may have logged it on the way out
                if match := re.search(pattern, self.logs):
                    return match
                raise AssertionError(f"{self.name} exited {self.returncode} before "
                                     f"logging {pattern!r}\n{self.tail()}")
            time.sleep(poll)
        return match

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the process group (our own child and anything it started)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(10)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; return the exit code."""
        if self.alive:
            self.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.returncode

    @classmethod
    def kill_all(cls) -> None:
        for proc in cls._all:
            proc.kill()
        cls._all.clear()


class Transformation(Proc):
    def record(self) -> dict[str, Any]:
        """What the script wrote to record.json in its cwd ({} before its first write)."""
        path = self.cwd / "record.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}


class Pipeline:
    def __init__(self, root: Path, s3: S3Server, rabbit: Rabbit,
                 manager: FakeManager | None = None, *, step: str = "step",
                 input_channel: str = "fragmenter_output", output_channel: str = "step_output",
                 broker_url: str = DEFAULT_URL):
        self.hash = random_id(32)
        self.step = step
        self.name = f"{self.hash}-{step}"  # ITERUM_NAME
        self.root = root
        self.volume = _volume_dir(root)
        self.s3 = s3
        self.minio = s3.harness_client()
        self.rabbit = rabbit
        self.manager = manager
        self.broker_url = broker_url  # e.g. set to amqp_proxy.url() before start_sidecar
        self.input_queue = f"{self.hash}-{input_channel}"
        self.output_queue = f"{self.hash}-{output_channel}"
        self.lineage_queue = f"{self.hash}-lineage"
        self.dead_queue = f"{self.input_queue}-dead"
        self.input_bucket = f"{self.hash}-fragmenter-output"
        self.output_bucket = f"{self.hash}-{step}-output"
        self.config_bucket = f"{self.hash}-iterum-config"
        assert len(self.output_bucket) <= 63, "step names have at most 23 characters (§6.1)"
        self.config: dict[str, Any] = {}  # ITERUM_CONFIG, for both containers
        self.procs: list[Proc] = []
        self._buckets: set[str] = set()
        if manager is not None:
            manager.expect(self.hash, self.name)
        for queue in (self.input_queue, self.output_queue, self.lineage_queue):
            rabbit.declare(queue)
        rabbit.track(self.dead_queue)

    # --- environments ----------------------------------------------------------------

    def sidecar_env(self, **overrides: str | None) -> dict[str, str]:
        """The sidecar's variables (sidecar/shell/config); an override of None removes one."""
        env = {
            "DATA_VOLUME_PATH": str(self.volume),
            "ITERUM_NAME": self.name,
            "PIPELINE_HASH": self.hash,
            "ITERUM_CONFIG": json.dumps(self.config),
            "ITERUM_CONFIG_PATH": "config",
            "MINIO_URL": self.s3.url,
            "MINIO_ACCESS_KEY": self.s3.access_key,
            "MINIO_SECRET_KEY": self.s3.secret_key,
            "MINIO_USE_SSL": "false",
            "MINIO_OUTPUT_BUCKET": self.output_bucket,
            "MQ_BROKER_URL": self.broker_url,
            "MQ_INPUT_QUEUE": self.input_queue,
            "MQ_OUTPUT_QUEUE": self.output_queue,
            "MQ_PREFETCH_COUNT": "",
            "MANAGER_URL": self.manager.url if self.manager else "http://dummy-manager",
            "TRANSFORMATION_STEP_INPUT": "tts.sock",
            "TRANSFORMATION_STEP_OUTPUT": "fts.sock",
            **FAST_SIDECAR_ENV,
        }
        return _apply(env, overrides)

    def transformation_env(self, **overrides: str | None) -> dict[str, str]:
        """What the manager gives the transformation container (§2.2), plus test knobs."""
        env = {
            "DATA_VOLUME_PATH": str(self.volume),
            "TRANSFORMATION_STEP_INPUT": "tts.sock",
            "TRANSFORMATION_STEP_OUTPUT": "fts.sock",
            "ITERUM_CONFIG": json.dumps(self.config),
            "ITERUM_CONFIG_PATH": "config",
            "RECORD_FILE": "record.json",
        }
        return _apply(env, overrides)

    # --- inputs (emulating the fragmenter-sidecar, §14.1) -----------------------------

    def ensure_bucket(self, bucket: str) -> None:
        if bucket not in self._buckets:
            if not self.minio.bucket_exists(bucket):
                self.minio.make_bucket(bucket)
            self._buckets.add(bucket)

    def put_object(self, bucket: str, key: str, data: bytes | str) -> None:
        data = data.encode() if isinstance(data, str) else data
        self.ensure_bucket(bucket)
        self.minio.put_object(bucket, key, io.BytesIO(data), len(data))

    def upload_input(self, name: str, data: bytes | str,
                     bucket: str | None = None) -> dict[str, str]:
        """Put `iterum_data/<name>` in the fragmenter bucket; return its RemoteFileDesc."""
        bucket = bucket or self.input_bucket
        key = f"iterum_data/{name}"
        self.put_object(bucket, key, data)
        return {"name": name, "path": key, "bucket": bucket}

    def upload_config(self, file_name: str, data: bytes | str) -> str:
        """Put a config file where the fragmenter-sidecar puts it (§6.2, §16.3)."""
        key = f"iterum_config/{file_name}"
        self.put_object(self.config_bucket, key, data)
        return key

    def fragment(self, files: list[dict], custom: Any = None, *,
                 fragment_id: str | None = None, predecessors: Any = ()) -> dict[str, Any]:
        """A RemoteFragmentDesc body; custom is left out when None (like Go's omitempty)."""
        metadata: dict[str, Any] = {"fragment_id": fragment_id or random_id(),
                                    "predecessors": list(predecessors)
                                    if predecessors is not None else None}
        if custom is not None:
            metadata["custom"] = custom
        return {"files": files, "metadata": metadata}

    def publish_fragment(self, files: list[dict], custom: Any = None, *,
                         fragment_id: str | None = None, predecessors: Any = (),
                         queue: str | None = None) -> dict[str, Any]:
        """Publish a RemoteFragmentDesc to the input queue; return the body."""
        body = self.fragment(files, custom, fragment_id=fragment_id, predecessors=predecessors)
        self.rabbit.publish(queue or self.input_queue, body)
        return body

    def send_input(self, files: dict[str, bytes | str], custom: Any = None) -> dict[str, Any]:
        """Upload files {name: data} and publish them as one fragment; return the body."""
        descs = [self.upload_input(name, data) for name, data in files.items()]
        return self.publish_fragment(descs, custom)

    def finish_upstream(self) -> None:
        assert self.manager is not None, "this pipeline has no FakeManager"
        self.manager.finish()

    # --- outputs (emulating the combiner, §14.2) ---------------------------------------

    def outputs(self, count: int | None = None, timeout: float = 30.0) -> list[Message]:
        return self.rabbit.drain(self.output_queue, count, timeout)

    def lineage(self, count: int | None = None, timeout: float = 30.0) -> list[Message]:
        return self.rabbit.drain(self.lineage_queue, count, timeout)

    def read(self, file_desc: dict[str, str]) -> bytes:
        """The content of a RemoteFileDesc {"bucket", "path"}."""
        response = self.minio.get_object(file_desc["bucket"], file_desc["path"])
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    # --- processes -------------------------------------------------------------------

    def start_sidecar(self, **env: str | None) -> Proc:
        """`python -m sidecar` with sidecar_env(**env); cwd and logs under the test's dir.
        Its HTTP endpoint listens on a free port the kernel picks (SIDECAR_HTTP_PORT=auto,
        unless set in env), `proc.http_url`."""
        n = len(self.procs)
        cwd = self.root / f"sidecar-{n}"
        cwd.mkdir()
        env.setdefault("SIDECAR_HTTP_PORT", "auto")
        environ = {**base_env(), **self.sidecar_env(**env)}
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        proc = Proc(f"sidecar-{n}", [sys.executable, "-m", "sidecar"], environ, cwd, self.root)
        port = environ.get("SIDECAR_HTTP_PORT", "0")
        proc._http_url = ("" if port == "0" else None if port == "auto"
                          else f"http://127.0.0.1:{port}")
        self.procs.append(proc)
        return proc

    def start_transformation(self, script: str | Path, **env: str | None) -> Transformation:
        """Run a pyterum script (a path, or a name from tests/integration/transformations
        or sidecar/tools/examples) with transformation_env(**env), in a fresh cwd."""
        path = resolve_script(script)
        n = len(self.procs)
        cwd = self.root / f"{path.stem}-{n}"
        cwd.mkdir()
        environ = {**base_env(), **self.transformation_env(**env)}
        proc = Transformation(f"{path.stem}-{n}", [sys.executable, str(path)], environ, cwd,
                              self.root)
        self.procs.append(proc)
        return proc

    def wait_for_sockets(self, timeout: float = 20.0) -> None:
        """Wait for tts.sock and fts.sock (start the transformation after this: pyterum
        sleeps 5 s after a failed connect)."""
        deadline = time.monotonic() + timeout
        paths = [self.volume / "tts.sock", self.volume / "fts.sock"]
        while not all(p.exists() for p in paths):
            if time.monotonic() > deadline:
                logs = "\n".join(p.tail() for p in self.procs if p.name.startswith("sidecar"))
                raise TimeoutError(f"sockets not created after {timeout}s\n{logs}")
            time.sleep(0.05)

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
        for bucket in self._buckets | {self.output_bucket, self.config_bucket}:
            self.s3.remove_bucket(bucket)
        if not self.volume.is_relative_to(self.root):
            shutil.rmtree(self.volume, ignore_errors=True)


def resolve_script(script: str | Path) -> Path:
    path = Path(script)
    if path.suffix != ".py":
        path = path.with_suffix(".py")
    for candidate in (path, TRANSFORMATIONS / path, EXAMPLES / path):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no transformation script {script!r}")


def _apply(env: dict[str, str], overrides: dict[str, str | None]) -> dict[str, str]:
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def _volume_dir(root: Path) -> Path:
    """DATA_VOLUME_PATH under the test's dir, unless the socket paths would get too long
    for AF_UNIX (108 bytes); then a short directory in the system temp dir."""
    volume = root / "volume"
    if len(str(volume / "tts.sock")) > 100:
        return Path(tempfile.mkdtemp(prefix="iv-"))
    volume.mkdir()
    return volume
