"""Security settings: secrets from files, socket mode and peer uid, TLS files for the broker
and S3, the transformation's start-up deadline. Errors name the variable, never a secret."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from test_config import ACCESS_KEY, BROKER_PASSWORD, SECRET_KEY, manager_env

from sidecar.cli import secrets
from sidecar.shell import config
from sidecar.shell.config import ConfigError
from sidecar.tools.reference import configuration_markdown

FILE_SECRET = "from-a-file-9f8e7d"


def load(tmp_path: Path, **changes: str | None) -> config.Settings:
    env = manager_env(tmp_path)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return config.load(env)


def error(tmp_path: Path, **changes: str | None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **changes)
    return info.value


def no_secret_in(err: ConfigError, *more: str) -> None:
    for secret in (SECRET_KEY, ACCESS_KEY, BROKER_PASSWORD, FILE_SECRET, *more):
        assert secret not in str(err) and secret not in repr(err)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# --- secrets from files -------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\n\n"])
def test_secret_file_replaces_the_variable_and_its_newline_is_stripped(
        tmp_path: Path, ending: str) -> None:
    path = write(tmp_path / "secret-key", FILE_SECRET + ending)
    s = load(tmp_path, MINIO_SECRET_KEY=None, MINIO_SECRET_KEY_FILE=path)
    assert s.minio_secret_key == FILE_SECRET
    assert s.notices == ()


def test_every_secret_can_come_from_a_file(tmp_path: Path) -> None:
    url = f"amqp://iterum:{FILE_SECRET}@rabbit:5672/%2F"
    s = load(tmp_path, MINIO_ACCESS_KEY=None, MINIO_SECRET_KEY=None, MQ_BROKER_URL=None,
             MINIO_ACCESS_KEY_FILE=write(tmp_path / "a", "access-from-file\n"),
             MINIO_SECRET_KEY_FILE=write(tmp_path / "s", "secret-from-file\n"),
             MQ_BROKER_URL_FILE=write(tmp_path / "u", url + "\n"))
    assert (s.minio_access_key, s.minio_secret_key, s.mq_broker_url) == (
        "access-from-file", "secret-from-file", url)
    # the values read from files are redacted like the others
    assert {"access-from-file", "secret-from-file", FILE_SECRET} <= set(secrets(s))


def test_the_file_wins_over_the_variable_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "secret-key", FILE_SECRET)
    s = load(tmp_path, MINIO_SECRET_KEY_FILE=path)  # MINIO_SECRET_KEY is set as well
    assert s.minio_secret_key == FILE_SECRET
    [notice] = s.notices
    assert "MINIO_SECRET_KEY_FILE" in notice and "ignored" in notice
    assert SECRET_KEY not in notice and FILE_SECRET not in notice


def test_same_value_in_both_places_is_no_notice(tmp_path: Path) -> None:
    s = load(tmp_path, MINIO_SECRET_KEY_FILE=write(tmp_path / "k", SECRET_KEY + "\n"))
    assert s.notices == ()


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read"), ("", "empty"), ("\n\n", "empty"), (b"\xff\xfe", "UTF-8")])
def test_unusable_secret_file_is_named_without_its_content(
        tmp_path: Path, content: str | bytes | None, problem: str) -> None:
    path = tmp_path / "broker-url"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    err = error(tmp_path, MQ_BROKER_URL=None, MQ_BROKER_URL_FILE=str(path))
    assert err.variable == "MQ_BROKER_URL_FILE"
    assert problem in str(err) and str(path) in str(err)
    no_secret_in(err)


def test_invalid_value_from_a_file_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path / "u", f"http://iterum:{FILE_SECRET}@rabbit:5672\n")
    err = error(tmp_path, MQ_BROKER_URL=None, MQ_BROKER_URL_FILE=path)
    assert err.variable == "MQ_BROKER_URL"
    no_secret_in(err)


def test_a_required_secret_names_its_file_variant_when_missing(tmp_path: Path) -> None:
    err = error(tmp_path, MINIO_ACCESS_KEY=None)
    assert err.variable == "MINIO_ACCESS_KEY" and "MINIO_ACCESS_KEY_FILE" in str(err)


def test_file_variants_are_known_and_documented() -> None:
    names = config.known_names()
    assert {"MINIO_ACCESS_KEY_FILE", "MINIO_SECRET_KEY_FILE", "MQ_BROKER_URL_FILE"} <= names
    doc = configuration_markdown()
    for name in ("MINIO_ACCESS_KEY_FILE", "MINIO_SECRET_KEY_FILE", "MQ_BROKER_URL_FILE"):
        assert f"| `{name}` |" in doc


# --- sockets --------------------------------------------------------------------------------


def test_socket_and_peer_defaults(tmp_path: Path) -> None:
    s = load(tmp_path)
    assert s.socket_mode == 0o660
    assert s.peer_uid is None
    assert s.transformation_connect_timeout == 600


@pytest.mark.parametrize(("raw", "mode"), [("0600", 0o600), ("660", 0o660), ("0o666", 0o666),
                                           ("0", 0)])
def test_socket_mode_is_octal(tmp_path: Path, raw: str, mode: int) -> None:
    assert load(tmp_path, SIDECAR_SOCKET_MODE=raw).socket_mode == mode


@pytest.mark.parametrize("raw", ["rw-rw----", "0999", "1777", "-1", "0x1b6"])
def test_socket_mode_invalid(tmp_path: Path, raw: str) -> None:
    assert error(tmp_path, SIDECAR_SOCKET_MODE=raw).variable == "SIDECAR_SOCKET_MODE"


def test_peer_uid(tmp_path: Path) -> None:
    assert load(tmp_path, SIDECAR_PEER_UID="10001").peer_uid == 10001
    assert load(tmp_path, SIDECAR_PEER_UID="0").peer_uid == 0
    for raw in ("nobody", "-5"):
        assert error(tmp_path, SIDECAR_PEER_UID=raw).variable == "SIDECAR_PEER_UID"


def test_connect_timeout_zero_means_wait_forever(tmp_path: Path) -> None:
    s = load(tmp_path, SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT="0")
    assert s.transformation_connect_timeout == 0
    assert load(tmp_path, SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT="30"
                ).transformation_connect_timeout == 30


# --- TLS files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed certificate and its key, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("pem")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (d / "cert.pem").write_bytes(cert_pem)
    (d / "key.pem").write_bytes(key_pem)
    (d / "both.pem").write_bytes(cert_pem + key_pem)
    (d / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    return {n: str(d / f"{n}.pem") for n in ("cert", "key", "both", "junk")}


AMQPS = f"amqps://iterum:{BROKER_PASSWORD}@rabbit:5671/%2F"


def test_amqps_with_ca_and_client_certificate(tmp_path: Path, pem: dict[str, str]) -> None:
    s = load(tmp_path, MQ_BROKER_URL=AMQPS, SIDECAR_AMQP_CA_FILE=pem["cert"],
             SIDECAR_AMQP_CERT_FILE=pem["cert"], SIDECAR_AMQP_KEY_FILE=pem["key"])
    assert (s.amqp_ca_file, s.amqp_cert_file, s.amqp_key_file) == (
        pem["cert"], pem["cert"], pem["key"])
    # the key may sit in the certificate's file
    assert load(tmp_path, MQ_BROKER_URL=AMQPS, SIDECAR_AMQP_CERT_FILE=pem["both"]
                ).amqp_cert_file == pem["both"]


@pytest.mark.parametrize(("changes", "variable", "problem"), [
    ({"SIDECAR_AMQP_CA_FILE": "cert"}, "SIDECAR_AMQP_CA_FILE", "amqps://"),
    ({"MQ_BROKER_URL": AMQPS, "SIDECAR_AMQP_CA_FILE": "missing"}, "SIDECAR_AMQP_CA_FILE",
     "no such file"),
    ({"MQ_BROKER_URL": AMQPS, "SIDECAR_AMQP_CA_FILE": "junk"}, "SIDECAR_AMQP_CA_FILE",
     "PEM"),
    ({"MQ_BROKER_URL": AMQPS, "SIDECAR_AMQP_KEY_FILE": "key"}, "SIDECAR_AMQP_KEY_FILE",
     "SIDECAR_AMQP_CERT_FILE"),
    ({"MQ_BROKER_URL": AMQPS, "SIDECAR_AMQP_CERT_FILE": "cert"}, "SIDECAR_AMQP_CERT_FILE",
     "PEM"),  # no key anywhere
    ({"MQ_BROKER_URL": AMQPS, "SIDECAR_AMQP_CERT_FILE": "cert",
      "SIDECAR_AMQP_KEY_FILE": "missing"}, "SIDECAR_AMQP_KEY_FILE", "no such file"),
    ({"SIDECAR_S3_CA_FILE": "cert"}, "SIDECAR_S3_CA_FILE", "MINIO_USE_SSL"),
    ({"MINIO_USE_SSL": "true", "SIDECAR_S3_CA_FILE": "junk"}, "SIDECAR_S3_CA_FILE", "PEM"),
    ({"MINIO_USE_SSL": "true", "SIDECAR_S3_CA_FILE": "missing"}, "SIDECAR_S3_CA_FILE",
     "no such file"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_tls_file_errors_name_the_variable(tmp_path: Path, pem: dict[str, str],
                                           changes: dict[str, str], variable: str,
                                           problem: str) -> None:
    files = {**pem, "missing": str(tmp_path / "missing.pem")}
    resolved = {k: files.get(v, v) if k.endswith("_FILE") else v for k, v in changes.items()}
    err = error(tmp_path, **resolved)
    assert err.variable == variable, err
    assert problem in str(err), err
    no_secret_in(err)


def test_s3_ca_file_with_https(tmp_path: Path, pem: dict[str, str]) -> None:
    s = load(tmp_path, MINIO_USE_SSL="1", SIDECAR_S3_CA_FILE=pem["cert"])
    assert s.minio_use_ssl and s.s3_ca_file == pem["cert"]
