"""The harness itself works (no sidecar needed): S3, AMQP proxy, fake manager, RabbitMQ
helpers, Pipeline, and the transformation scripts against a stand-in for the sidecar's
sockets."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time

import pika
import pytest
import requests
import urllib3
from minio.error import S3Error
from pika.exceptions import AMQPConnectionError

from .harness import B2C, C2B, DROP, Pipeline, random_id
from .harness.rabbit import ITERUM_FLAGS, queue_counts

pytestmark = pytest.mark.integration


# --- S3 --------------------------------------------------------------------------------


def test_s3_counts_requests_and_injects_503_then_recovers(s3):
    bucket = f"harness-{random_id(16)}"
    client = s3.client(retries=False)
    client.make_bucket(bucket)
    client.put_object(bucket, "iterum_data/a.txt", io.BytesIO(b"hello"), 5)
    assert client.get_object(bucket, "iterum_data/a.txt").read() == b"hello"
    assert s3.count("PutObject", bucket=bucket) == 1
    assert s3.count("GetObject", bucket=bucket, key="iterum_data/a.txt") == 1
    assert s3.count("GetBucketLocation") == 0  # the client has a fixed region

    fault = s3.fail(times=2, status=503, code="SlowDown", op="GetObject", bucket=bucket)
    for _ in range(2):
        with pytest.raises(S3Error) as err:
            client.get_object(bucket, "iterum_data/a.txt")
        assert err.value.code == "SlowDown"
    assert client.get_object(bucket, "iterum_data/a.txt").read() == b"hello"
    assert fault.hits == 2
    assert s3.count("GetObject") == 4

    # minio's default HTTP pool retries 503s by itself (urllib3), so a caller never sees them
    s3.fail(times=3, status=503, code="ServiceUnavailable", op="PutObject")
    s3.client().put_object(bucket, "iterum_data/b.txt", io.BytesIO(b"x"), 1)
    assert s3.count("PutObject", key="iterum_data/b.txt") == 4
    s3.remove_bucket(bucket)


def test_s3_stall_drop_and_harness_requests(s3):
    bucket = f"harness-{random_id(16)}"
    setup = s3.harness_client()
    setup.make_bucket(bucket)
    setup.put_object(bucket, "k", io.BytesIO(b"data"), 4)
    assert s3.count() == 0  # harness requests are not counted...
    assert s3.count(include_harness=True) >= 2  # ...but recorded

    stall = s3.stall(op="GetObject", bucket=bucket)
    setup.get_object(bucket, "k").read()  # never stalled: harness client
    got = []
    reader = threading.Thread(
        target=lambda: got.append(s3.client().get_object(bucket, "k").read()))
    reader.start()
    assert stall.wait_hit(5)
    time.sleep(0.3)
    assert reader.is_alive() and not got
    stall.release()
    reader.join(5)
    assert got == [b"data"]

    s3.drop(times=1, op="HeadObject")
    with pytest.raises(urllib3.exceptions.ProtocolError):
        s3.client(retries=False).stat_object(bucket, "k")
    assert s3.client(retries=False).stat_object(bucket, "k").size == 4
    s3.remove_bucket(bucket)


def test_s3_corrupts_and_truncates_get_bodies(s3):
    bucket = f"harness-{random_id(16)}"
    setup = s3.harness_client()
    setup.make_bucket(bucket)
    data = bytes(range(256)) * 40
    setup.put_object(bucket, "k", io.BytesIO(data), len(data))
    client = s3.client(retries=False)

    s3.corrupt(times=1, bucket=bucket)
    response = client.get_object(bucket, "k")
    got = response.read()
    assert len(got) == len(data) and got != data
    assert int(response.headers["Content-Length"]) == len(data)
    assert sum(a != b for a, b in zip(got, data, strict=True)) == 1

    s3.truncate(times=1, bucket=bucket)
    response = client.get_object(bucket, "k")
    with pytest.raises(urllib3.exceptions.ProtocolError, match="IncompleteRead"):
        response.read()
    assert client.get_object(bucket, "k").read() == data  # both were once only
    assert [r.fault for r in s3.requests() if r.op == "GetObject"] == [
        "corrupt", "truncate", None]
    s3.remove_bucket(bucket)


# --- AMQP proxy ------------------------------------------------------------------------


def test_amqp_proxy_round_trip_records_method_frames(amqp_proxy, rabbit):
    queue = rabbit.track(f"harness-{random_id(12)}")
    conn = pika.BlockingConnection(pika.URLParameters(amqp_proxy.url()))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, **ITERUM_FLAGS)
        ch.basic_publish("", queue, b'{"x": 1}', pika.BasicProperties(delivery_mode=2))
        bodies = []
        ch.basic_consume(queue, lambda c, m, p, b: (bodies.append(b), c.basic_ack(m.delivery_tag)))
        deadline = time.monotonic() + 5
        while not bodies and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert bodies == [b'{"x": 1}']
    finally:
        conn.close()
    assert amqp_proxy.count("basic.publish", C2B) == 1
    [deliver] = amqp_proxy.frames("basic.deliver", B2C)
    [ack] = amqp_proxy.frames("basic.ack", C2B)
    assert ack.delivery_tag == deliver.delivery_tag == 1 and ack.multiple is False
    assert amqp_proxy.count("queue.declare-ok", B2C) == 1
    assert amqp_proxy.accepted == 1


def test_amqp_proxy_holds_publisher_confirms_until_release(amqp_proxy, rabbit):
    queue = rabbit.declare(f"harness-{random_id(12)}")
    amqp_proxy.hold_confirms()
    result = []

    def publish() -> None:  # pika is not thread-safe: the connection lives in this thread
        conn = pika.BlockingConnection(pika.URLParameters(amqp_proxy.url()))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", queue, b"confirm me", pika.BasicProperties(delivery_mode=2))
        result.append("confirmed")
        conn.close()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    amqp_proxy.wait_for("basic.ack", direction=B2C)
    time.sleep(0.5)
    assert publisher.is_alive() and not result and amqp_proxy.held == 1
    assert rabbit.ready(queue) == 1  # the broker has it; only the confirm is parked
    assert amqp_proxy.release() == 1
    publisher.join(5)
    assert result == ["confirmed"]


def test_amqp_proxy_holding_is_of_broker_frames_only(amqp_proxy):
    """A held broker→client method keeps its content frames with it, whatever the client
    sends meanwhile; the client's own frames on that channel number (a publish's method,
    header and body, split over reads) are never held."""
    from .harness.amqp_proxy import BODY, HEADER, METHOD, METHOD_IDS, _Conn

    def method(channel: int, name: str) -> bytes:
        payload = struct.pack(">HH", *METHOD_IDS[name]) + b"\x00" * 9
        return struct.pack(">BHI", METHOD, channel, len(payload)) + payload + b"\xce"

    def content(kind: int, channel: int) -> bytes:
        return struct.pack(">BHI", kind, channel, 3) + b"abc" + b"\xce"

    a, b = socket.socketpair()
    conn = _Conn(99, a, b)
    park = amqp_proxy._park
    amqp_proxy.hold(lambda f: f.name in ("basic.ack", "basic.deliver"))
    assert park(conn, B2C, method(2, "basic.ack"))  # a held confirm on channel 2
    assert not park(conn, C2B, method(2, "basic.publish"))
    assert not park(conn, C2B, content(HEADER, 2))  # the publish's content passes
    assert not park(conn, C2B, content(BODY, 2))
    assert park(conn, B2C, method(1, "basic.deliver"))  # a held delivery on channel 1...
    assert not park(conn, C2B, method(1, "basic.ack"))  # (the client acks something)
    assert park(conn, B2C, content(HEADER, 1))  # ...keeps its content with it
    assert park(conn, B2C, content(BODY, 1))
    amqp_proxy.hold(lambda f: False)
    conn.close()


def test_amqp_proxy_drop_all_and_refuse_new(amqp_proxy):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_proxy.url()))
    assert amqp_proxy.connections == 1
    amqp_proxy.drop_all()
    with pytest.raises(pika.exceptions.AMQPError):
        conn.process_data_events(time_limit=2)
    assert conn.is_closed

    amqp_proxy.refuse_new()
    with pytest.raises(AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(amqp_proxy.url(connection_attempts=1)))
    amqp_proxy.refuse_new(False)
    pika.BlockingConnection(pika.URLParameters(amqp_proxy.url())).close()


def test_amqp_proxy_stall_delays_traffic(amqp_proxy, rabbit):
    queue = rabbit.declare(f"harness-{random_id(12)}")
    conn = pika.BlockingConnection(pika.URLParameters(amqp_proxy.url()))
    ch = conn.channel()
    amqp_proxy.stall()
    ch.basic_publish("", queue, b"late")
    time.sleep(0.5)
    assert rabbit.ready(queue) == 0
    amqp_proxy.resume()
    deadline = time.monotonic() + 5
    while rabbit.ready(queue) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rabbit.ready(queue) == 1
    conn.close()


# --- fake manager ----------------------------------------------------------------------


def test_fake_manager_scripted_responses(fake_manager):
    fake_manager.expect("h" * 32, "h" * 32 + "-step")
    url = f"{fake_manager.url}/pipeline/{'h' * 32}/{'h' * 32}-step/upstream_finished"
    fake_manager.script(404, (500, "boom"), (200, "not json"), DROP)
    assert requests.get(url, timeout=5).status_code == 404
    assert requests.get(url, timeout=5).text == "boom"
    assert requests.get(url, timeout=5).text == "not json"
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    assert requests.get(url, timeout=5).json() == {"finished": False}
    fake_manager.finish()
    assert requests.get(url, timeout=5).json() == {"finished": True}
    assert requests.get(url.replace("-step", "-other"), timeout=5).status_code == 404
    assert [r.status for r in fake_manager.requests()] == [404, 500, 200, None, 200, 200, 404]
    assert fake_manager.polls == 7


# --- RabbitMQ helpers ------------------------------------------------------------------


def test_queue_counts_ready_and_unacked(rabbit):
    queue = rabbit.declare(f"harness-{random_id(12)}")
    for i in range(3):
        rabbit.publish(queue, {"n": i})
    held = rabbit.get(queue, ack=False)  # stays unacked on the helper's channel
    assert held.json() == {"n": 0}
    assert queue_counts(queue) == (2, 1)
    assert [m.json() for m in rabbit.drain(queue)] == [{"n": 1}, {"n": 2}]
    with pytest.raises(LookupError):
        queue_counts(f"harness-missing-{random_id(12)}")


# --- Pipeline --------------------------------------------------------------------------


def test_pipeline_environment_and_inputs(pipeline: Pipeline):
    from sidecar.shell import config

    settings = config.load(pipeline.sidecar_env())  # the env is complete and valid
    assert settings.upstream_url == (f"{pipeline.manager.url}/pipeline/{pipeline.hash}/"
                                     f"{pipeline.hash}-step/upstream_finished")
    assert settings.lineage_queue == pipeline.lineage_queue
    assert settings.tts_path == str(pipeline.volume / "tts.sock")
    assert "MQ_PREFETCH_COUNT" not in pipeline.sidecar_env(MQ_PREFETCH_COUNT=None)
    assert len(pipeline.hash) == 32 and pipeline.hash.isalnum() and pipeline.hash.islower()

    body = pipeline.send_input({"a.txt": "alpha", "b.bin": b"\x00\xff"}, custom={"k": "v"})
    assert len(body["metadata"]["fragment_id"]) == 64
    assert body["metadata"]["predecessors"] == []
    [msg] = pipeline.rabbit.drain(pipeline.input_queue, 1)
    assert msg.json() == body
    assert msg.properties.delivery_mode == 2
    assert msg.properties.content_type == "application/json"
    assert pipeline.read(body["files"][1]) == b"\x00\xff"
    assert body["files"][0] == {"name": "a.txt", "path": "iterum_data/a.txt",
                                "bucket": f"{pipeline.hash}-fragmenter-output"}


def test_transformation_process_handle(pipeline: Pipeline):
    proc = pipeline.start_transformation("filter")  # no sidecar: pyterum keeps retrying
    proc.wait_for_log("Couldn't reach host", timeout=15)
    assert proc.alive and proc.record()["received"] == []
    proc.kill()
    assert proc.returncode == -9
    with pytest.raises(AssertionError, match="exited -9"):
        proc.expect_exit(0, timeout=1)


# --- the transformation scripts, against a stand-in for the sidecar's sockets ----------


class FakeSockets:
    """Listens on tts.sock/fts.sock like the sidecar; frames are u32 LE length + JSON."""

    def __init__(self, volume):
        self.listeners = {}
        for name in ("tts.sock", "fts.sock"):
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(str(volume / name))
            sock.listen(1)
            sock.settimeout(30)
            self.listeners[name] = sock

    def accept(self) -> None:
        self.tts, _ = self.listeners["tts.sock"].accept()
        self.fts, _ = self.listeners["fts.sock"].accept()
        self.fts.settimeout(30)

    def send(self, obj) -> None:
        data = json.dumps(obj).encode()
        self.tts.sendall(struct.pack("<I", len(data)) + data)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.fts.recv(n - len(buf))
            assert chunk, "transformation closed fts.sock early"
            buf += chunk
        return buf

    def until_complete(self) -> list:
        messages = []
        while True:
            msg = json.loads(self._exact(struct.unpack("<I", self._exact(4))[0]))
            if msg == {"status": "complete"}:
                return messages
            messages.append(msg)

    def close(self) -> None:
        for sock in (*self.listeners.values(), getattr(self, "tts", None),
                     getattr(self, "fts", None)):
            if sock is not None:
                sock.close()


def _local_fragment(pipeline: Pipeline, files: dict, custom=None) -> dict:
    fid = random_id()
    directory = pipeline.volume / "inputs" / fid
    directory.mkdir(parents=True)
    descs = []
    for name, data in files.items():
        (directory / name).write_bytes(data)
        descs.append({"name": name, "path": str(directory / name)})
    metadata = {"fragment_id": fid, "predecessors": []}
    if custom is not None:
        metadata["custom"] = custom
    return {"files": descs, "metadata": metadata}


BIG_CUSTOM = {"blob": "z" * (1 << 20) + "tail"}
SCRIPTS = {
    # script: (input customs, env, expected outputs)
    "passthrough": ([None], {}, 1),
    "fanout": ([{"fanout": 3}], {}, 3),
    "pair": ([None, None, None], {}, 2),
    "filter": ([None, None], {}, 0),
    "custom_echo": ([{"k": [1, {"n": None}]}], {}, 1),
    "channel": ([None], {"OUTPUT_CHANNELS": "rejects,-"}, 2),
    "big_message": ([BIG_CUSTOM], {"REQUIRE_BIG_INPUT": "1", "BIG_BYTES": str(1 << 21)}, 1),
    "config_reader": ([None], {}, 1),
    "gate": ([None, None], {}, 2),  # no GATE_FILE: no waiting
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_transformation_script(pipeline: Pipeline, script: str):
    customs, env, n_outputs = SCRIPTS[script]
    if script == "config_reader":
        pipeline.config = {"config_files": {"settings": "settings.json"}}
        (pipeline.volume / "config").mkdir()
        (pipeline.volume / "config" / "settings.json").write_text('{"threshold": 7}')
    fake = FakeSockets(pipeline.volume)
    try:
        proc = pipeline.start_transformation(script, **env)
        fake.accept()
        inputs = [_local_fragment(pipeline, {f"in{i}.txt": f"data {i}".encode()}, custom)
                  for i, custom in enumerate(customs)]
        for frag in inputs:
            fake.send(frag)
        fake.send({"status": "complete"})
        messages = fake.until_complete()
        proc.expect_exit(0, timeout=20)
    finally:
        fake.close()

    ids = [f["metadata"]["fragment_id"] for f in inputs]
    outputs = [m for m in messages if "files" in m]
    done = [m["fragment_id"] for m in messages if "files" not in m]
    assert sorted(done) == sorted(ids)
    assert len(outputs) == n_outputs
    for out in outputs:
        assert set(out["metadata"]) == {"fragment_id", "predecessors", "output_channel", "custom"}
        assert out["metadata"]["predecessors"] and set(out["metadata"]["predecessors"]) <= set(ids)
        for f in out["files"]:
            assert os.path.isfile(f["path"]), f
    if script == "pair":
        assert [len(o["metadata"]["predecessors"]) for o in outputs] == [2, 1]
    if script == "custom_echo":
        assert outputs[0]["metadata"]["custom"] == customs[0]
    if script == "channel":
        assert [o["metadata"]["output_channel"] for o in outputs] == ["rejects", None]
    if script == "big_message":
        assert len(outputs[0]["metadata"]["custom"]["blob"]) == 1 << 21
    if script == "config_reader":
        with open(outputs[0]["files"][0]["path"]) as f:
            assert f.read() == '{"threshold": 7}'

    record = proc.record()
    assert [r["fragment_id"] for r in record["received"]] == ids
    assert all(f["existed"] for r in record["received"] for f in r["files"])
    assert record["done_sent"] is True
