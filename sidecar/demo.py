"""`iterum-sidecar demo`: one pipeline step on this machine, end to end.

It uses the local RabbitMQ, starts an embedded S3 endpoint (moto in server mode), uploads
sample input files the way the fragmenter would (§14.1), publishes their descriptors, and
runs the real sidecar process next to the bundled pyterum example transformation. The
upstream is the built-in dummy manager, so the step ends by itself and the sidecar exits
through the same shutdown chain as in a cluster.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pika
from minio import Minio

from .examples import PASSTHROUGH

STEP = "demo-step"
_ALPHABET = string.ascii_lowercase + string.digits


def run_demo(fragments: int, broker_url: str) -> int:
    try:
        connection = pika.BlockingConnection(_params(broker_url))
    except pika.exceptions.AMQPError as err:
        print(f"iterum-sidecar demo: RabbitMQ is not reachable at {_redact(broker_url)} "
              f"({type(err).__name__}); start one with `rabbitmq-server -detached` "
              "or pass --broker amqp://user:password@host:5672/", file=sys.stderr)
        return 1
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("iterum-sidecar demo: the demo needs its extra: pip install "
              "'iterum-sidecar[demo]'", file=sys.stderr)
        return 1
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    try:
        with tempfile.TemporaryDirectory(prefix="iterum-demo-") as tmp:
            return _run(Path(tmp), fragments, broker_url, connection, s3)
    finally:
        s3.stop()
        if connection.is_open:
            connection.close()


def _run(tmp: Path, fragments: int, broker_url: str, connection, s3) -> int:
    host, port = s3.get_host_and_port()
    storage = Minio(f"{host}:{port}", "demo", "demo-secret", secure=False)
    run_hash = "".join(random.choices(_ALPHABET, k=32))
    queues = {"input": f"{run_hash}-fragmenter_output", "output": f"{run_hash}-demo_output",
              "lineage": f"{run_hash}-lineage", "dead": f"{run_hash}-fragmenter_output-dead"}
    volume = tmp / "data-volume"
    volume.mkdir()
    channel = connection.channel()
    for queue in queues.values():
        channel.queue_declare(queue, durable=False, auto_delete=False, exclusive=False)
    try:
        print(f"demo: pipeline run {run_hash}, {fragments} fragment(s), volume {volume}")
        _publish_inputs(storage, channel, run_hash, queues["input"], fragments)
        env = _environment(run_hash, volume, f"{host}:{port}", broker_url, queues)
        code = _run_step(tmp, env)
        _report(storage, channel, queues, run_hash, code)
        return code
    finally:
        for queue in queues.values():
            channel.queue_delete(queue)


def _publish_inputs(storage: Minio, channel, run_hash: str, queue: str, count: int) -> None:
    """What the fragmenter-sidecar does upstream: objects first, then their descriptors."""
    bucket = f"{run_hash}-fragmenter-output"
    storage.make_bucket(bucket)
    for i in range(count):
        name = f"sample_{i:04d}.txt"
        data = f"sample input {i} of the iterum-sidecar demo\n".encode()
        storage.put_object(bucket, f"iterum_data/{name}", io.BytesIO(data), len(data))
        body = {"files": [{"name": name, "path": f"iterum_data/{name}", "bucket": bucket}],
                "metadata": {"fragment_id": "".join(random.choices(_ALPHABET, k=64)),
                             "predecessors": [], "custom": {"sample": i}}}
        channel.basic_publish("", queue, json.dumps(body).encode(), pika.BasicProperties(
            delivery_mode=2, content_type="application/json"))


def _environment(run_hash: str, volume: Path, s3_url: str, broker_url: str,
                 queues: dict[str, str]) -> dict[str, str]:
    """The variables the manager would give the two containers (§2.2)."""
    env = {k: v for k, v in os.environ.items() if k != "ENC_MSG_SIZE_LENGTH"}
    env.update({
        "DATA_VOLUME_PATH": str(volume), "ITERUM_NAME": f"{run_hash}-{STEP}",
        "PIPELINE_HASH": run_hash, "ITERUM_CONFIG": "{}", "ITERUM_CONFIG_PATH": "config",
        "MINIO_URL": s3_url, "MINIO_ACCESS_KEY": "demo", "MINIO_SECRET_KEY": "demo-secret",
        "MINIO_USE_SSL": "false", "MINIO_OUTPUT_BUCKET": f"{run_hash}-{STEP}-output",
        "MQ_BROKER_URL": broker_url, "MQ_INPUT_QUEUE": queues["input"],
        "MQ_OUTPUT_QUEUE": queues["output"], "MQ_PREFETCH_COUNT": "",
        "MANAGER_URL": "http://dummy-manager", "SIDECAR_MANAGER_POLL_INTERVAL": "0.5",
        "SIDECAR_QUEUE_POLL_INTERVAL": "0.5",
        "TRANSFORMATION_STEP_INPUT": "tts.sock", "TRANSFORMATION_STEP_OUTPUT": "fts.sock",
    })
    return env


def _run_step(tmp: Path, env: dict[str, str]) -> int:
    sidecar = subprocess.Popen([sys.executable, "-m", "sidecar"], env=env)
    deadline = time.monotonic() + 10
    while not Path(env["DATA_VOLUME_PATH"], "fts.sock").exists():  # pyterum retries every 5s
        if sidecar.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    transformation = subprocess.Popen([sys.executable, str(PASSTHROUGH)], env=env, cwd=tmp,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        code = sidecar.wait(timeout=300)
        transformation.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        sidecar.terminate()
        transformation.terminate()
        code = sidecar.wait(timeout=30)
    print(f"demo: sidecar exited with {code}, transformation with {transformation.returncode}")
    return code


def _report(storage: Minio, channel, queues: dict[str, str], run_hash: str, code: int) -> None:
    outputs = _drain(channel, queues["output"])
    lineage = _drain(channel, queues["lineage"])
    dead = _drain(channel, queues["dead"])
    left = channel.queue_declare(queues["input"], passive=True).method.message_count
    objects = list(storage.list_objects(f"{run_hash}-{STEP}-output", recursive=True))
    print(f"demo: {len(outputs)} output descriptor(s), {len(lineage)} lineage message(s), "
          f"{len(objects)} output object(s), {len(dead)} dead letter(s), "
          f"{left} input(s) left in the queue")
    if outputs:
        print("demo: first output descriptor:")
        print(json.dumps(json.loads(outputs[0]), indent=2))
    if code == 0 and outputs and len(outputs) == len(lineage) == len(objects) and not left:
        print("demo: OK, every input became an output in S3, on the output queue and in "
              "the lineage queue")


def _drain(channel, queue: str) -> list[bytes]:
    bodies = []
    while True:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def _params(url: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 3
    return params


def _redact(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}" if "@" in rest else url
