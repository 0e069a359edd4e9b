"""TLS for the tests: a throwaway CA with server and client certificates, and a
TLS-terminating TCP proxy to put in front of a plain service (moto S3, RabbitMQ 5672).

Neither moto nor the local RabbitMQ has a TLS listener, so the proxy speaks TLS to the
client (the sidecar) and plain TCP to the real service behind it, byte for byte. With
`client_ca` it requires a client certificate signed by that CA, like a broker configured
with `ssl_options.verify = verify_peer, fail_if_no_peer_cert = true`. Handshake failures
are recorded (`failures`), so a test can see why a client was turned away.
"""

from __future__ import annotations

import datetime
import ipaddress
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: str  # PEM certificate
    key: str  # PEM private key (unencrypted)


class CertificateAuthority:
    """A CA that lives for one test: its certificate in `ca_file`, certificates issued
    for 127.0.0.1 / localhost (servers) or a client name, all as PEM files in `directory`."""

    def __init__(self, directory: Path, name: str = "iterum test CA"):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._name = subject
        now = _now()
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256()))
        self.ca_file = str(directory / f"{_slug(name)}.pem")
        Path(self.ca_file).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool = True) -> CertFiles:
        """A certificate for a server on 127.0.0.1/localhost, or a client called `name`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        base = self.directory / _slug(name)
        cert_path, key_path = Path(f"{base}.crt"), Path(f"{base}.key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return CertFiles(str(cert_path), str(key_path))


class TlsProxy:
    """Listens on 127.0.0.1:<free port> with TLS; each connection is forwarded in plain TCP
    to `upstream`. Stop with close()."""

    def __init__(self, upstream: tuple[str, int], server: CertFiles, *,
                 client_ca: str | None = None, host: str = "127.0.0.1"):
        self.upstream = upstream
        self.host = host
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(server.cert, server.key)
        if client_ca:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)
        self._lock = threading.Lock()
        self.failures: list[str] = []  # handshake errors, in order
        self.handshakes = 0  # completed TLS handshakes
        self.client_names: list[str] = []  # CN of each verified client certificate
        self._socks: list[socket.socket] = []
        self._stopped = False
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self._thread = threading.Thread(target=self._accept_loop, name="tls-proxy",
                                        daemon=True)
        self._thread.start()

    def wait_for_failure(self, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.failures:
                    return self.failures[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no failed TLS handshake on {self.address} in {timeout}s")
            time.sleep(0.05)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            _close(sock)
        self._thread.join(2)

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(client,), name="tls-proxy-conn",
                             daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10)
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError) as err:
            with self._lock:
                self.failures.append(f"{type(err).__name__}: {err}")
            _close(client)
            return
        peer = tls.getpeercert()
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _close(tls)
            return
        tls.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            self.handshakes += 1
            if peer:
                self.client_names += [v for rdn in peer.get("subject", ()) for k, v in rdn
                                      if k == "commonName"]
            self._socks += [tls, upstream]
        _pump(tls, upstream)


def _pump(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """Both directions on one thread: an SSL object must not be read and written from two
    threads at once."""
    try:
        while True:
            ready = [tls] if tls.pending() else []  # decrypted bytes already buffered
            if not ready:
                ready, _, _ = select.select([tls, plain], [], [], 1.0)
            if tls in ready:
                data = tls.recv(1 << 16)
                if not data:
                    break
                plain.sendall(data)
            if plain in ready:
                data = plain.recv(1 << 16)
                if not data:
                    break
                tls.sendall(data)
    except (OSError, ValueError):
        pass
    finally:
        _close(tls)
        _close(plain)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")
