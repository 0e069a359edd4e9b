"""Security (docs/reliability.md, "Security"): who may connect to the sockets, the modes of
what the sidecar creates on the volume, secrets read from files and never written to a
log, the journal or the HTTP endpoint. (TLS: test_reliability_tls.py; file names from
messages and from the transformation: test_reliability_bad_input.py and _frames.py.)
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Pipeline, S3Server, random_id
from .harness.rabbit import queue_counts
from .steps import (
    check_descriptor,
    dead_letters,
    endpoint,
    finish_step,
    log_lines,
    metric,
    metrics,
    start_step,
    wait_until,
)

pytestmark = pytest.mark.integration
NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def connect_as(uid: int, path: Path) -> str:
    """Connect to a UNIX socket from a child process running as `uid`; what happened:
    "refused-by-permissions", "closed" (accepted, then closed at once) or "open"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit
        result = b"?"
        try:
            os.setgid(uid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            try:
                sock.connect(str(path))
                result = b"closed" if sock.recv(1) == b"" else b"open"
            except PermissionError:
                result = b"refused-by-permissions"
            except TimeoutError:
                result = b"open"
            except OSError as err:
                result = b"closed" if err.errno == errno.ECONNRESET else str(err).encode()
        finally:
            os.write(write, result)
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        return f.read().decode()


def traversable_volume(pipeline: Pipeline) -> Path:
    """A volume every uid can reach (the pytest directory is 0700), so that what another
    uid meets is the socket's own mode. Pipeline.cleanup removes it."""
    volume = Path(tempfile.mkdtemp(prefix="iv-"))
    os.chmod(volume, 0o755)
    pipeline.volume = volume
    return volume


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another uid "
                                "needs root (the test switches a child to uid 65534)")


# --- sockets and the volume ------------------------------------------------------------------


@needs_root
def test_sockets_are_0660_and_another_uid_cannot_connect(pipeline: Pipeline, tmp_path: Path):
    gate = tmp_path / "open"
    traversable_volume(pipeline)
    pipeline.config = {"config_files": {"settings": "settings.json"}}
    pipeline.upload_config("settings.json", "{}")
    body = pipeline.send_input({"perm.txt": "permissions"})
    fid = body["metadata"]["fragment_id"]
    sidecar, trans = start_step(pipeline, "gate", transformation_env={"GATE_FILE": str(gate)})
    tts, fts = pipeline.volume / "tts.sock", pipeline.volume / "fts.sock"
    assert mode(tts) == mode(fts) == 0o660
    assert connect_as(NOBODY, tts) == "refused-by-permissions"
    assert connect_as(NOBODY, fts) == "refused-by-permissions"

    # what the sidecar made on the volume while the transformation holds the fragment
    assert wait_until(lambda: len(trans.record().get("received", [])) == 1, timeout=30)
    bucket_dir = pipeline.volume / pipeline.input_bucket
    fragment_dir = bucket_dir / fid
    assert mode(bucket_dir) == mode(fragment_dir) == 0o750
    assert mode(fragment_dir / "perm.txt") == 0o640
    journal = pipeline.volume / ".sidecar" / "journal"
    assert mode(pipeline.volume / ".sidecar") == mode(journal) == 0o700
    assert {mode(p) for p in journal.iterdir()} == {0o600}
    assert mode(pipeline.volume / "config") == 0o750
    assert mode(pipeline.volume / "config" / "settings.json") == 0o640
    assert connect_as(NOBODY, tts) == "refused-by-permissions"  # still, with the volume open

    gate.touch()
    [out] = pipeline.outputs(1)
    finish_step(pipeline, sidecar, trans)
    check_descriptor(pipeline, out, predecessors=[fid],
                     contents={"gated_perm.txt": b"permissions"})


def test_socket_mode_is_configurable(pipeline: Pipeline):
    """The SIGTERM comes while the broker connection may still be opening: exit 0 all the
    same (issue 13; every start-up moment in test_signals_at_the_edges.py)."""
    sidecar = pipeline.start_sidecar(SIDECAR_SOCKET_MODE="0600")
    pipeline.wait_for_sockets()
    sidecar.wait_for_log(r"started: consuming", timeout=20)  # both chmods are done
    assert mode(pipeline.volume / "tts.sock") == mode(pipeline.volume / "fts.sock") == 0o600
    sidecar.terminate()
    sidecar.expect_exit(0, timeout=20)


def test_a_peer_of_another_uid_is_refused_logged_and_counted(pipeline: Pipeline):
    """SIDECAR_PEER_UID: the check is SO_PEERCRED at accept, so it holds even when the
    socket files are open to everyone (mode 0666 here)."""
    traversable_volume(pipeline)
    body = pipeline.send_input({"peer.txt": "peer check"})
    ours = os.geteuid()
    allowed = ours if ours == 0 else ours + 1  # without root: refuse ourselves instead
    sidecar = pipeline.start_sidecar(SIDECAR_PEER_UID=str(allowed), SIDECAR_SOCKET_MODE="0666")
    pipeline.wait_for_sockets()
    tts = pipeline.volume / "tts.sock"
    stranger = NOBODY if ours == 0 else ours
    if ours == 0:
        assert connect_as(NOBODY, tts) == "closed"  # accepted by the kernel, closed by us
    else:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(tts))
            assert sock.recv(1) == b""
    sidecar.wait_for_log(rf"connection to tts\.sock refused: the peer \(pid \d+\) runs as uid "
                         rf"{stranger}, SIDECAR_PEER_UID allows only uid {allowed}", timeout=10)
    samples = metrics(sidecar)
    assert metric(samples, "iterum_sidecar_connections_refused_total", channel="tts") == 1
    assert endpoint(sidecar, "/readyz")[1]["checks"]["transformation"] is False
    assert queue_counts(pipeline.input_queue) == (0, 1)  # held for a real transformation
    if ours != 0:
        sidecar.terminate()
        sidecar.expect_exit(0, timeout=20)
        return
    trans = pipeline.start_transformation("passthrough")  # our uid: allowed
    [out] = pipeline.outputs(1)
    finish_step(pipeline, sidecar, trans)
    check_descriptor(pipeline, out, predecessors=[body["metadata"]["fragment_id"]],
                     contents={"out_peer.txt": b"peer check"})


# --- secrets -----------------------------------------------------------------------------------


@pytest.fixture
def broker_user() -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of its own, so that its password is a string no test shares."""
    exe = shutil.which("rabbitmqctl") or "rabbitmqctl"
    user, password = f"iterum-{random_id(8)}", f"pw-{random_id(24)}"

    def ctl(*args: str) -> None:
        subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)

    ctl("add_user", user, password)
    try:
        ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        ctl("delete_user", user)


def secret_files(tmp_path: Path, **values: str) -> dict[str, str]:
    """Write each value to a file (with a trailing newline, as `echo` does); env entries."""
    directory = tmp_path / "secrets"
    directory.mkdir(exist_ok=True)
    env = {}
    for name, value in values.items():
        path = directory / name.lower()
        path.write_text(value + "\n")
        env[f"{name}_FILE"] = str(path)
        env[name] = None  # not in the environment at all
    return env


def assert_nowhere(secrets: list[str], *texts: str) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text


@pytest.mark.s3  # the server's real keys: also on RGW
def test_secrets_from_files_never_reach_logs_journal_or_endpoint(
        pipeline: Pipeline, s3: S3Server, broker_user: tuple[str, str], tmp_path: Path):
    user, password = broker_user
    access, secret = s3.access_key, s3.secret_key  # real keys: the server checks them
    pipeline.broker_url = f"amqp://{user}:{password}@127.0.0.1:5672/%2F"
    env = secret_files(tmp_path, MINIO_ACCESS_KEY=access, MINIO_SECRET_KEY=secret,
                       MQ_BROKER_URL=pipeline.broker_url)
    body = pipeline.send_input({"s.txt": "secret run"})
    missing = pipeline.publish_fragment([{"name": "gone.txt", "path": "iterum_data/gone",
                                          "bucket": pipeline.input_bucket}])
    s3.fail(2, 503, "SlowDown", op="GetObject", key="iterum_data/s.txt")  # error paths too
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env=env)  # DEBUG logs
    [out] = pipeline.outputs(1)
    [dead] = dead_letters(pipeline, 1)
    pages = [endpoint(sidecar, p)[1] for p in ("/metrics", "/debug/fragments", "/readyz")]
    finish_step(pipeline, sidecar, trans)

    check_descriptor(pipeline, out, predecessors=[body["metadata"]["fragment_id"]],
                     contents={"out_s.txt": b"secret run"})
    assert dead.json() == missing
    journal = "".join(p.read_text() for p in (pipeline.volume / ".sidecar" / "journal").iterdir())
    assert "S3 attempt 1 failed" in sidecar.logs  # the error paths were taken
    assert_nowhere([access, secret, password], sidecar.logs, journal,
                   *(p if isinstance(p, str) else json.dumps(p) for p in pages))


def test_a_refused_broker_password_and_config_errors_never_show_a_secret(
        pipeline: Pipeline, broker_user: tuple[str, str], tmp_path: Path):
    user, password = broker_user
    wrong = f"wrong-{random_id(20)}"
    url = f"amqp://{user}:{wrong}@127.0.0.1:5672/%2F"
    env = secret_files(tmp_path, MQ_BROKER_URL=url)
    sidecar = pipeline.start_sidecar(**env, SIDECAR_LOG_LEVEL="DEBUG")
    sidecar.wait_for_log(r"(?i)ACCESS_REFUSED|authentication|broker not reachable", timeout=20)
    sidecar.signal(signal.SIGTERM)
    sidecar.expect_exit(0, timeout=20)
    assert_nowhere([wrong, password], sidecar.logs)

    # configuration errors: one line naming the variable, never the value
    cases = [
        secret_files(tmp_path, MQ_BROKER_URL=f"http://{user}:{wrong}@rabbit:5672"),
        {"MINIO_SECRET_KEY_FILE": str(tmp_path / "no-such-file"), "MINIO_SECRET_KEY": wrong},
        {"MQ_BROKER_URL": f"amqps://{user}:{wrong}@rabbit:5671/%2F",
         "SIDECAR_AMQP_CA_FILE": str(tmp_path / "no-ca.pem")},
    ]
    for case in cases:
        proc = pipeline.start_sidecar(**case)
        proc.expect_exit(1, timeout=20)
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "configuration error" in proc.stderr
        assert_nowhere([wrong, password], proc.logs)

    # both the variable and its file: the file wins, the warning shows neither value
    both = {**secret_files(tmp_path, MINIO_SECRET_KEY=f"file-{wrong}"),
            "MINIO_SECRET_KEY": f"env-{wrong}"}
    proc = pipeline.start_sidecar(**both)
    proc.wait_for_log(r"MINIO_SECRET_KEY_FILE is set: MINIO_SECRET_KEY from the environment "
                      r"is ignored", timeout=20)
    proc.terminate()
    proc.expect_exit(0, timeout=20)
    assert_nowhere([wrong], proc.logs)


def test_a_signature_refused_for_one_object_dead_letters_it_and_the_rest_flow(
        pipeline: Pipeline, s3: S3Server):
    """A server that refuses the signature of one object's request (a key it canonicalises
    otherwise than the client signed it) while it takes the keys for the bucket: that
    fragment is dead-lettered; the run goes on (it used to end with exit 1, and every
    restart met the same input again)."""
    good = pipeline.send_input({"fine.txt": "flows"})
    odd = pipeline.send_input({"odd.txt": "refused"})
    odd_key = odd["files"][0]["path"]
    s3.fail(None, 403, "SignatureDoesNotMatch", "The request signature we calculated does "
            "not match the signature you provided.", op="GetObject", key=odd_key)
    sidecar, trans = start_step(pipeline, "passthrough")
    [output] = pipeline.outputs(1)
    [letter] = dead_letters(pipeline, 1)
    finish_step(pipeline, sidecar, trans)

    assert output.json()["metadata"]["predecessors"] == [good["metadata"]["fragment_id"]]
    assert letter.headers["x-iterum-error-class"] == "signature-refused"
    assert letter.properties.message_id == odd["metadata"]["fragment_id"]
    assert s3.count("GetObject", key=odd_key) == 1  # refused once, not retried
    assert "[storage-credentials]" not in sidecar.logs
    assert "accepts the keys for the bucket" in sidecar.logs


@pytest.mark.parametrize("wrong", ["secret", "access key"])
def test_refused_s3_keys_end_the_run_in_one_line_and_give_the_input_back(
        pipeline: Pipeline, s3: S3Server, wrong: str):
    """Keys S3 refuses (SignatureDoesNotMatch, InvalidAccessKeyId) are no fragment's fault:
    like an untrusted certificate, one line and exit 1, not every input dead-lettered. (RGW
    with STS answers AccessDenied instead, which stays a fragment's permanent failure: this
    test is moto's, docs/s3-servers.md.)"""
    bad = f"wrong-{random_id(20)}"
    keys = {"MINIO_SECRET_KEY": bad} if wrong == "secret" else {"MINIO_ACCESS_KEY": bad}
    pipeline.send_input({"k.txt": "never read"})
    sidecar = pipeline.start_sidecar(**keys, SIDECAR_LOG_LEVEL="INFO")
    sidecar.expect_exit(1, timeout=30)

    assert s3.count("GetObject") == 1  # refused once, not retried
    [error] = log_lines(sidecar.stderr, "ERROR")
    assert "[storage-credentials]" in error and "MINIO_SECRET_KEY" in error, error
    assert "Traceback" not in sidecar.logs and bad not in sidecar.logs
    sidecar.wait_for_log(r"exiting with code 1 .*\[storage-credentials\]", timeout=1)
    assert queue_counts(pipeline.input_queue) == (1, 0)  # back for a sidecar with the keys
    assert dead_letters(pipeline) == []
