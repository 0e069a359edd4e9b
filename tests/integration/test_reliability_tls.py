"""TLS to S3 and to the broker, for real (docs/reliability.md, "Security").

Neither moto nor the local RabbitMQ listens with TLS, so a TLS-terminating proxy with a
throwaway CA sits in front of each (harness/tls.py). The sidecar completes a fragment over
https with SIDECAR_S3_CA_FILE and over amqps with SIDECAR_AMQP_CA_FILE and a client
certificate (the proxy requires one); without the CA it fails clearly, and nothing is
lost: the input stays in (or goes back to) the queue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Pipeline, S3Server
from .harness.rabbit import queue_counts
from .harness.tls import CertificateAuthority, TlsProxy
from .steps import (
    check_descriptor,
    check_lineage,
    dead_letters,
    finish_step,
    log_lines,
    start_step,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "pki")


@pytest.fixture
def s3_tls(s3: S3Server, ca: CertificateAuthority) -> Iterator[TlsProxy]:
    proxy = TlsProxy(("127.0.0.1", s3.port), ca.issue("s3"))
    yield proxy
    proxy.close()


@pytest.fixture
def amqps(rabbitmq_url: str, ca: CertificateAuthority) -> Iterator[TlsProxy]:
    """RabbitMQ behind TLS that requires a client certificate signed by the CA."""
    proxy = TlsProxy(("127.0.0.1", 5672), ca.issue("rabbitmq"), client_ca=ca.ca_file)
    yield proxy
    proxy.close()


# --- S3 over https ---------------------------------------------------------------------------


def test_s3_over_https_with_a_custom_ca_bundle(pipeline: Pipeline, s3: S3Server,
                                               s3_tls: TlsProxy, ca: CertificateAuthority):
    body = pipeline.send_input({"secure.txt": "over https"})
    fid = body["metadata"]["fragment_id"]
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "MINIO_URL": s3_tls.address, "MINIO_USE_SSL": "true",
        "SIDECAR_S3_CA_FILE": ca.ca_file})
    [out] = pipeline.outputs(1)
    lineage = pipeline.lineage(1)
    finish_step(pipeline, sidecar, trans)

    check_descriptor(pipeline, out, predecessors=[fid], contents={"out_secure.txt": b"over https"})
    check_lineage(pipeline, [out], lineage)
    assert s3_tls.handshakes >= 1 and s3_tls.failures == []
    # the sidecar's GET and PUT went through the TLS proxy (its only S3 address)
    assert s3.count("GetObject") == 1 and s3.count("PutObject") == 1
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_s3_over_https_without_the_ca_fails_clearly_and_gives_the_input_back(
        pipeline: Pipeline, s3: S3Server, s3_tls: TlsProxy):
    pipeline.send_input({"secure.txt": "over https"})
    sidecar = pipeline.start_sidecar(MINIO_URL=s3_tls.address, MINIO_USE_SSL="true",
                                     SIDECAR_LOG_LEVEL="INFO")
    sidecar.expect_exit(1, timeout=30)

    assert "unknown ca" in s3_tls.wait_for_failure().lower()  # our client refused it
    assert s3.count("GetObject") == 0  # nothing reached S3
    [error] = log_lines(sidecar.stderr, "ERROR")  # one line says what and how to fix it
    assert "[storage-tls]" in error and "certificate" in error
    assert "SIDECAR_S3_CA_FILE" in error
    assert "Traceback" not in sidecar.logs
    sidecar.wait_for_log(r"exiting with code 1 .*\[storage-tls\]", timeout=1)
    # not dead-lettered: the input is back in the queue for a sidecar with the right CA
    assert queue_counts(pipeline.input_queue) == (1, 0)
    assert dead_letters(pipeline) == []


# --- the broker over amqps --------------------------------------------------------------------


def test_amqps_with_a_ca_and_a_client_certificate(pipeline: Pipeline, amqps: TlsProxy,
                                                  ca: CertificateAuthority):
    client = ca.issue("iterum-sidecar", server=False)
    pipeline.broker_url = f"amqps://guest:guest@{amqps.address}/%2F"
    body = pipeline.send_input({"amqps.txt": "over amqps"})
    fid = body["metadata"]["fragment_id"]
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "SIDECAR_AMQP_CA_FILE": ca.ca_file, "SIDECAR_AMQP_CERT_FILE": client.cert,
        "SIDECAR_AMQP_KEY_FILE": client.key})
    [out] = pipeline.outputs(1)
    lineage = pipeline.lineage(1)
    finish_step(pipeline, sidecar, trans)

    check_descriptor(pipeline, out, predecessors=[fid], contents={"out_amqps.txt": b"over amqps"})
    check_lineage(pipeline, [out], lineage)
    assert amqps.client_names == ["iterum-sidecar"]  # one connection, our certificate
    assert amqps.failures == []
    assert queue_counts(pipeline.input_queue) == (0, 0)


@pytest.mark.parametrize("missing", ["ca", "client-certificate"])
def test_amqps_without_the_ca_or_the_client_certificate_consumes_nothing(
        pipeline: Pipeline, amqps: TlsProxy, ca: CertificateAuthority, missing: str):
    client = ca.issue("iterum-sidecar", server=False)
    pipeline.broker_url = f"amqps://guest:guest@{amqps.address}/%2F"
    pipeline.send_input({"amqps.txt": "over amqps"})
    env = {"SIDECAR_AMQP_CA_FILE": ca.ca_file, "SIDECAR_AMQP_CERT_FILE": client.cert,
           "SIDECAR_AMQP_KEY_FILE": client.key}
    if missing == "ca":
        env.pop("SIDECAR_AMQP_CA_FILE")
        refused, logged = "unknown ca", r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"
    else:
        env.pop("SIDECAR_AMQP_CERT_FILE")
        env.pop("SIDECAR_AMQP_KEY_FILE")
        refused, logged = "did not return a certificate", r"(?i)certificate required"
    sidecar = pipeline.start_sidecar(**env, SIDECAR_LOG_LEVEL="INFO")

    assert refused in amqps.wait_for_failure(timeout=20).lower()
    sidecar.wait_for_log(logged, timeout=20)  # the reason is in the sidecar's log
    assert amqps.handshakes == 0
    assert queue_counts(pipeline.input_queue) == (1, 0)  # nothing was taken
    # it keeps trying within its connect budget; a SIGTERM meanwhile ends it cleanly
    sidecar.terminate()
    sidecar.expect_exit(0, timeout=20)
    assert "Traceback" not in sidecar.logs
    assert not re.search(r"AttributeError", sidecar.logs)
