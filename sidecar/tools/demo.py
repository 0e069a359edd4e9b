"""`iterum-sidecar demo`: one pipeline step on this machine, end to end.

It uses the local RabbitMQ, starts an embedded S3 endpoint (moto in server mode) or, with
``--s3-endpoint URL``, uses an external S3 server with the keys the sidecar reads
(MINIO_ACCESS_KEY, MINIO_SECRET_KEY or their _FILE variants), uploads sample input files
the way the fragmenter would (§14.1), publishes their descriptors, and
runs the real sidecar process next to the bundled pyterum example transformation. The
upstream is the built-in dummy manager, so the step ends by itself and the sidecar exits
through the same shutdown chain as in a cluster.

While it runs, a live table shows the fragments by lifecycle state, read from the
sidecar's own ``/debug/fragments`` endpoint. At the end: a summary, and the lineage of the
outputs (from the lineage queue) as a tree.
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import urllib3
from minio import Minio
from minio.error import S3Error
from pika.exceptions import AMQPError

from states import INPUT, OUTPUT

from ..shell import config
from ..shell.http import LISTENING_PORT
from .demo_s3 import S3Target, client, external_s3, remove_buckets
from .examples import PASSTHROUGH

STEP = "demo-step"
_ALPHABET = string.ascii_lowercase + string.digits
TREE_LIMIT = 8  # inputs shown in the lineage tree
POLL = 0.2


@dataclass
class Run:
    run_hash: str
    queues: dict[str, str]
    inputs: list[dict[str, Any]] = field(default_factory=list)  # the descriptors sent
    progress: dict[str, Any] = field(default_factory=dict)  # the last /debug/fragments
    seconds: float = 0.0
    sidecar_code: int | None = None
    http_url: str = ""  # the sidecar's endpoint, once its `http:` log line names the port
    transformation_code: int | None = None
    log_path: Path | None = None

    @property
    def buckets(self) -> tuple[str, str]:
        """The buckets the run fills: the fragmenter's (inputs) and the step's (outputs)."""
        return f"{self.run_hash}-fragmenter-output", f"{self.run_hash}-{STEP}-output"


def run_demo(fragments: int, broker_url: str, openlineage: str | None = None,
             s3_endpoint: str | None = None, keep_buckets: bool = False) -> int:
    try:
        target = external_s3(s3_endpoint) if s3_endpoint else None
    except config.ConfigError as err:
        print(f"iterum-sidecar demo: {err}", file=sys.stderr)
        return 1
    try:
        connection = pika.BlockingConnection(_params(broker_url))
    except AMQPError as err:
        print(f"iterum-sidecar demo: RabbitMQ is not reachable at {_redact(broker_url)} "
              f"({type(err).__name__}); start one with `rabbitmq-server -detached` "
              "or pass --broker amqp://user:password@host:5672/", file=sys.stderr)
        return 1
    try:
        from rich.console import Console
        if target is None:
            from moto.server import ThreadedMotoServer
    except ImportError:
        print("iterum-sidecar demo: the demo needs its extra: pip install "
              "'iterum-sidecar[demo]'", file=sys.stderr)
        connection.close()
        return 1
    s3 = None
    if target is None:  # the embedded endpoint
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request
        s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        s3.start()
        host, port = s3.get_host_and_port()
        target = S3Target(f"{host}:{port}", False, "demo", "demo-secret")
    try:
        with tempfile.TemporaryDirectory(prefix="iterum-demo-") as tmp:
            # an external server keeps what is not removed: the run's buckets go, as its
            # queues do, unless asked to keep them
            return _run(Console(), Path(tmp), fragments, broker_url, connection, target,
                        openlineage, remove_after=s3 is None and not keep_buckets)
    except (S3Error, urllib3.exceptions.HTTPError) as err:  # e.g. keys the server refuses
        print(f"iterum-sidecar demo: S3 at {target.url} failed: {err}", file=sys.stderr)
        return 1
    finally:
        if s3 is not None:
            s3.stop()
        if connection.is_open:
            connection.close()


def _run(console: Any, tmp: Path, fragments: int, broker_url: str, connection,
         target: S3Target, openlineage: str | None, remove_after: bool) -> int:
    storage = client(target)
    run_hash = "".join(random.choices(_ALPHABET, k=32))
    run = Run(run_hash, {"input": f"{run_hash}-fragmenter_output",
                         "output": f"{run_hash}-demo_output",
                         "lineage": f"{run_hash}-lineage",
                         "dead": f"{run_hash}-fragmenter_output-dead"})
    volume = tmp / "data-volume"
    volume.mkdir()
    channel = connection.channel()
    for queue in run.queues.values():
        channel.queue_declare(queue, durable=False, auto_delete=False, exclusive=False)
    try:
        console.print(f"[bold]iterum-sidecar demo[/]: pipeline run {run_hash}, step "
                      f"{STEP}, {fragments} fragment(s), S3 at "
                      f"{'https' if target.secure else 'http'}://{target.url}")
        run.inputs = _publish_inputs(storage, channel, run.buckets[0], run.queues["input"],
                                     fragments)
        env = _environment(run, volume, target, broker_url)
        # a free port of the kernel's choosing, read back from the log: demos (or sidecars)
        # running side by side on one host never ask for the same one
        env.update({"SIDECAR_HTTP_PORT": "auto", "SIDECAR_HTTP_HOST": "127.0.0.1",
                    "SIDECAR_LOG_FORMAT": "json"})
        if openlineage:
            env.update({"SIDECAR_OPENLINEAGE": "file",
                        "SIDECAR_OPENLINEAGE_URL": os.path.abspath(openlineage)})
        run.log_path = tmp / "sidecar.log"
        _run_step(console, tmp, env, run)
        return _report(console, storage, channel, run, openlineage)
    finally:
        for queue in run.queues.values():
            channel.queue_delete(queue)
        if remove_after:
            remove_buckets(console, storage, run.buckets)


def _publish_inputs(storage: Minio, channel, bucket: str, queue: str,
                    count: int) -> list[dict[str, Any]]:
    """What the fragmenter-sidecar does upstream: objects first, then their descriptors."""
    storage.make_bucket(bucket)
    bodies = []
    for i in range(count):
        name = f"sample_{i:04d}.txt"
        data = f"sample input {i} of the iterum-sidecar demo\n".encode()
        storage.put_object(bucket, f"iterum_data/{name}", io.BytesIO(data), len(data))
        body = {"files": [{"name": name, "path": f"iterum_data/{name}", "bucket": bucket}],
                "metadata": {"fragment_id": "".join(random.choices(_ALPHABET, k=64)),
                             "predecessors": [], "custom": {"sample": i}}}
        channel.basic_publish("", queue, json.dumps(body).encode(), pika.BasicProperties(
            delivery_mode=2, content_type="application/json"))
        bodies.append(body)
    return bodies


def _environment(run: Run, volume: Path, target: S3Target, broker_url: str
                 ) -> dict[str, str]:
    """The variables the manager would give the two containers (§2.2)."""
    run_hash, queues = run.run_hash, run.queues
    env = {k: v for k, v in os.environ.items() if k != "ENC_MSG_SIZE_LENGTH"}
    env.update({
        "DATA_VOLUME_PATH": str(volume), "ITERUM_NAME": f"{run_hash}-{STEP}",
        "PIPELINE_HASH": run_hash, "ITERUM_CONFIG": "{}", "ITERUM_CONFIG_PATH": "config",
        "MINIO_URL": target.url, "MINIO_ACCESS_KEY": target.access_key,
        "MINIO_SECRET_KEY": target.secret_key, "MINIO_USE_SSL": str(target.secure).lower(),
        "MINIO_OUTPUT_BUCKET": run.buckets[1],
        "MQ_BROKER_URL": broker_url, "MQ_INPUT_QUEUE": queues["input"],
        "MQ_OUTPUT_QUEUE": queues["output"], "MQ_PREFETCH_COUNT": "",
        "MANAGER_URL": "http://dummy-manager", "SIDECAR_MANAGER_POLL_INTERVAL": "0.5",
        "SIDECAR_QUEUE_POLL_INTERVAL": "0.5",
        "TRANSFORMATION_STEP_INPUT": "tts.sock", "TRANSFORMATION_STEP_OUTPUT": "fts.sock",
    })
    return env


def _run_step(console: Any, tmp: Path, env: dict[str, str], run: Run) -> None:
    from rich.live import Live

    assert run.log_path is not None
    started = time.monotonic()
    with open(run.log_path, "wb") as log:
        sidecar = subprocess.Popen([sys.executable, "-m", "sidecar"], env=env, stderr=log,
                                   stdout=log)
    deadline = time.monotonic() + 10
    while not Path(env["DATA_VOLUME_PATH"], "fts.sock").exists():  # pyterum retries every 5s
        if sidecar.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    transformation = subprocess.Popen([sys.executable, str(PASSTHROUGH)], env=env, cwd=tmp,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # transient: the live view gives way to the summary, which counts from the broker
        # and S3 themselves
        with Live(_progress_view(run, 0.0), console=console, refresh_per_second=8,
                  transient=True) as live:
            while sidecar.poll() is None and time.monotonic() - started < 300:
                run.http_url = run.http_url or _endpoint(run.log_path)
                progress = _fetch(run.http_url + "/debug/fragments") if run.http_url else None
                if progress is not None:
                    run.progress = progress
                live.update(_progress_view(run, time.monotonic() - started))
                time.sleep(POLL)
            run.seconds = time.monotonic() - started
        run.sidecar_code = sidecar.wait(timeout=30) if sidecar.poll() is None else sidecar.poll()
        run.transformation_code = transformation.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        sidecar.terminate()
        transformation.terminate()
        run.sidecar_code = sidecar.wait(timeout=30)
        run.transformation_code = transformation.wait(timeout=30)
        run.seconds = time.monotonic() - started


def _endpoint(log_path: Path) -> str:
    """The sidecar's HTTP endpoint, from the port its `http:` log line names ("" before)."""
    try:
        match = LISTENING_PORT.search(log_path.read_text(errors="replace"))
    except OSError:
        return ""
    return f"http://127.0.0.1:{match.group(1)}" if match else ""


def _fetch(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None  # not listening yet, or already gone


def _progress_view(run: Run, seconds: float) -> Any:
    from rich.console import Group
    from rich.table import Table

    counts = run.progress.get("counts", {})
    totals = run.progress.get("totals", {})
    total = len(run.inputs)
    acked = totals.get("input acked", 0)
    title = (f"step {STEP}: {acked}/{total} inputs acked, "
             f"{totals.get('output recorded', 0)} outputs recorded "
             f"({run.progress.get('step', 'starting')}, {seconds:.1f}s)")
    if run.http_url:
        title += f"\nsidecar endpoint {run.http_url} (/metrics, /debug/fragments)"
    table = Table(expand=False)
    table.add_column("lifecycle state")
    table.add_column("inputs", justify="right")
    table.add_column("outputs", justify="right")
    states = list(dict.fromkeys(s for s in (*INPUT.states, *OUTPUT.states)
                                if s not in INPUT.terminal | OUTPUT.terminal))
    for state in states:
        n_in = counts.get("input", {}).get(state)
        n_out = counts.get("output", {}).get(state)
        table.add_row(state, _cell(n_in, state in INPUT.states),
                      _cell(n_out, state in OUTPUT.states))
    for outcome in (s for s in INPUT.states if s in INPUT.terminal):
        table.add_row(f"[dim]{outcome}[/]", str(totals.get(f"input {outcome}", 0)), "")
    for outcome in (s for s in OUTPUT.states if s in OUTPUT.terminal):
        table.add_row(f"[dim]{outcome}[/]", "", str(totals.get(f"output {outcome}", 0)))
    return Group(title, table)


def _cell(n: int | None, applies: bool) -> str:
    if not applies:
        return ""
    return f"[bold]{n}[/]" if n else "0"


def _report(console: Any, storage: Minio, channel, run: Run,
            openlineage: str | None) -> int:
    from rich.table import Table

    outputs = [json.loads(b) for b in _drain(channel, run.queues["output"])]
    lineage = [json.loads(b) for b in _drain(channel, run.queues["lineage"])]
    dead = _drain(channel, run.queues["dead"])
    left = channel.queue_declare(run.queues["input"], passive=True).method.message_count
    objects = list(storage.list_objects(run.buckets[1], recursive=True))
    ok = (run.sidecar_code == 0 and bool(outputs) and not left and not dead
          and len(outputs) == len(lineage) == len(objects) == len(run.inputs))

    summary = Table(title="summary", title_justify="left", show_header=False)
    summary.add_column(justify="left")
    summary.add_column(justify="right")
    for label, value in (
            ("input fragments sent", len(run.inputs)),
            ("output descriptors published", len(outputs)),
            ("lineage messages", len(lineage)),
            ("output objects in S3", len(objects)),
            ("dead letters", len(dead)),
            ("inputs left in the queue", left),
            ("sidecar exit code", run.sidecar_code),
            ("transformation exit code", run.transformation_code),
            ("sidecar HTTP endpoint", run.http_url or "(never listened)"),
            ("seconds", f"{run.seconds:.1f}")):
        summary.add_row(label, str(value))
    console.print(summary)
    console.print(_lineage_tree(run, lineage))
    if openlineage:
        console.print(f"OpenLineage events: {os.path.abspath(openlineage)}")
    if ok:
        console.print("[green]demo: OK[/], every input became an output in S3, on the output "
                      "queue and in the lineage queue")
        return 0
    console.print("[red]demo: not every input came through[/]; the sidecar's last log lines:")
    assert run.log_path is not None
    for line in run.log_path.read_text(errors="replace").splitlines()[-15:]:
        console.print(line, markup=False, highlight=False)
    return run.sidecar_code or 1


def _lineage_tree(run: Run, lineage: list[dict[str, Any]]) -> Any:
    """pipeline run → input fragment (its S3 object) → step → output fragment → objects."""
    from rich.tree import Tree

    by_input: dict[str, list[dict[str, Any]]] = {}
    for message in lineage:
        desc = message["description"]
        for p in desc["metadata"]["predecessors"] or ["(none)"]:
            by_input.setdefault(p, []).append(desc)
    tree = Tree(f"[bold]lineage[/] of pipeline run {run.run_hash} [dim](inputs in "
                f"s3://{run.buckets[0]}, outputs in s3://{run.buckets[1]})[/]")
    for body in run.inputs[:TREE_LIMIT]:
        fid = body["metadata"]["fragment_id"]
        names = ", ".join(f["path"] for f in body["files"])
        node = tree.add(f"input {fid[:12]}… [dim]{names}[/]")
        step = node.add(f"[cyan]{STEP}[/]")
        for desc in by_input.get(fid, []):
            names = ", ".join(f["path"].replace(desc["metadata"]["fragment_id"], "<id>")
                              for f in desc["files"])
            step.add(f"output {desc['metadata']['fragment_id'][:12]}… [dim]{names}[/]")
        if fid not in by_input:
            step.add("[red]no output[/]")
    if len(run.inputs) > TREE_LIMIT:
        tree.add(f"[dim]… and {len(run.inputs) - TREE_LIMIT} more input(s)[/]")
    return tree


def _drain(channel, queue: str) -> list[bytes]:
    bodies: list[bytes] = []
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
