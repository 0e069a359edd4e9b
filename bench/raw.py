"""Raw limits of the endpoints, measured with the sidecar's own clients and nothing else.

Each measurement runs in a child process of its own (``python -m bench.raw KIND ...``,
one JSON object on stdout), as the sidecar does, so that it has a GIL and a CPU account
to itself:

* ``s3``: GET and PUT rates of small objects with the sidecar's client (minio with its
  own urllib3 pool, no hidden retries, fixed region) and its I/O pattern (``get_object``
  streamed to a file then renamed; ``put_object`` from an open file), from ``threads``
  threads like the sidecar's storage pool; then the *floor*: the CPU one GET and one PUT
  cost when done one at a time, with bare minio (``floor_minio_*``, the reference the
  sidecar's CPU is divided by) and through the sidecar's own adapter (``Storage.transfers``
  ``get`` and ``put``, ``floor_sidecar_*``: the direct S3 path unless
  SIDECAR_S3_SMALL_OBJECTS=minio), and ``fget_object`` for comparison (it sends a HEAD first).
* ``s3-floor``: only those floors, interleaved and repeated (best of ``--repeat``): minio,
  and the adapter with each SIDECAR_S3_SMALL_OBJECTS choice, on the same objects.
* ``s3-copy``: a plain client copy of one big object (GET to a file, PUT from the file
  with the same part size): the transfer rates the sidecar is compared with.
* ``amqp-consume``: pika ``SelectConnection`` consuming and acking a pre-filled queue with
  the sidecar's prefetch.
* ``amqp-publish``: pika ``SelectConnection`` publishing with publisher confirms, every
  message in flight at once (windowed confirms), as the sidecar does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

CHUNK = 1 << 20  # the sidecar's read size (sidecar/shell/io/transfers.py)
BODY_BYTES = 260  # about the size of a one-file RemoteFragmentDesc


def rusage() -> tuple[float, float]:
    """(user, sys) CPU seconds of this process (microsecond resolution)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def cpu() -> float:
    """CPU seconds (user+sys) of this process, all threads (nanosecond resolution)."""
    return time.process_time()


CONNECTS = [0]  # TCP connections the clients of this process opened


def _count_connects() -> None:
    """Count urllib3's TCP connects (a pool's num_connections misses the reconnects of a
    connection the server closed, which is what tells keep-alive from not)."""
    from urllib3.connection import HTTPConnection

    if getattr(HTTPConnection.connect, "bench_counted", False):
        return
    original = HTTPConnection.connect

    def connect(self: Any) -> None:
        CONNECTS[0] += 1
        original(self)

    connect.bench_counted = True  # type: ignore[attr-defined]
    HTTPConnection.connect = connect  # type: ignore[method-assign]


def client(endpoint: str, access: str, secret: str, pool: int, agent: str | None = None):
    """A minio client built like the sidecar's (sidecar/shell/io/storage.py)."""
    import urllib3
    from minio import Minio

    _count_connects()
    http = urllib3.PoolManager(maxsize=pool + 2, retries=False,
                               timeout=urllib3.Timeout(connect=60, read=60))
    c = Minio(endpoint, access_key=access, secret_key=secret, secure=False,
              region="us-east-1", http_client=http)
    if agent:
        c.set_app_info(agent, "1")
    return c


def get_to_file(c: Any, bucket: str, key: str, dest: str) -> int:
    """The sidecar's download: get_object streamed to ``dest.part``, then renamed."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    partial = dest + ".part"
    size = 0
    response = c.get_object(bucket, key)
    try:
        with open(partial, "wb") as out:
            for chunk in response.stream(CHUNK):
                out.write(chunk)
                size += len(chunk)
    finally:
        response.close()
        response.release_conn()
    os.replace(partial, dest)
    return size


def put_from_file(c: Any, bucket: str, key: str, source: str, part_size: int) -> int:
    """The sidecar's upload: put_object from an open file, one part at a time."""
    with open(source, "rb") as data:
        size = os.fstat(data.fileno()).st_size
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        c.put_object(bucket, key, data, size, content_type=content_type, part_size=part_size,
                     num_parallel_uploads=1)
    return size


def sidecar_storage(endpoint: str, access: str, secret: str, volume: str, mode: str) -> Any:
    """The sidecar's storage adapter (sidecar/shell/io/storage.py) with its defaults, the S3
    client ``mode`` (SIDECAR_S3_SMALL_OBJECTS); its worker pool is not used."""
    from sidecar.shell.io.storage import Storage

    settings = SimpleNamespace(
        data_volume_path=volume, minio_url=endpoint, minio_access_key=access,
        minio_secret_key=secret, minio_use_ssl=False, s3_ca_file="", minio_output_bucket="",
        storage_workers=8, storage_attempts=6, storage_backoff_max=20, storage_timeout=60,
        s3_region="us-east-1", part_size=16 << 20, s3_small_objects=mode)
    storage = Storage(settings, lambda event: None)
    storage.pool.shutdown()
    return storage


def floor(put: Callable[[int], Any], get: Callable[[int], Any], n: int) -> dict[str, float]:
    """CPU ms per PUT and per GET (user+sys, and sys), one at a time, of n each."""
    u0, s0 = rusage()
    for i in range(n):
        put(i)
    u1, s1 = rusage()
    for i in range(n):
        get(i)
    u2, s2 = rusage()
    return {"put_cpu_ms": 1000 * (u1 - u0 + s1 - s0) / n,
            "get_cpu_ms": 1000 * (u2 - u1 + s2 - s1) / n,
            "put_sys_cpu_ms": 1000 * (s1 - s0) / n, "get_sys_cpu_ms": 1000 * (s2 - s1) / n}


def _floors(c: Any, endpoint: str, access: str, secret: str, bucket: str, keys: list[str],
            tmp: str, source: str, modes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The floor of bare minio, then of the sidecar's adapter in each mode."""
    out = {"bare": floor(lambda i: put_from_file(c, bucket, keys[i], source, 16 << 20),
                          lambda i: get_to_file(c, bucket, keys[i],
                                                os.path.join(tmp, "floor", "file.bin")),
                          len(keys))}
    for mode in modes:
        storage = sidecar_storage(endpoint, access, secret, tmp, mode)
        out[mode] = floor(lambda i, s=storage: s.transfers.put(bucket, keys[i], source),
                          lambda i, s=storage: s.transfers.get(
                              bucket, keys[i], os.path.join(tmp, "floor", "s.bin")),
                          len(keys))
    return out


@contextlib.contextmanager
def _scratch(endpoint: str, access: str, secret: str, bucket: str, pool: int, size: int,
             keys: list[str]) -> Iterator[tuple[Any, str, str]]:
    """(a minio client, a scratch directory, a ``size``-byte source file in it) with the
    bucket made; afterwards the ``keys`` objects and the directory are removed."""
    c = client(endpoint, access, secret, pool)
    if not c.bucket_exists(bucket):
        c.make_bucket(bucket)
    tmp = tempfile.mkdtemp(prefix="bench-raw-s3-")
    try:
        source = os.path.join(tmp, "source.bin")
        with open(source, "wb") as f:
            f.write(os.urandom(size))
        yield c, tmp, source
        for key in keys:
            c.remove_object(bucket, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def s3_floor(endpoint: str, access: str, secret: str, bucket: str, count: int, size: int,
             repeat: int, modes: tuple[str, ...] = ("minio", "direct")) -> dict[str, Any]:
    """The floors only, the clients taking turns, best of ``repeat`` (a shared machine's
    noise only ever adds CPU)."""
    keys = [f"floor/{i:06d}/file.json" for i in range(count)]
    with _scratch(endpoint, access, secret, bucket, 1, size, keys) as (c, tmp, source):
        runs = [_floors(c, endpoint, access, secret, bucket, keys, tmp, source, modes)
                for _ in range(repeat)]
    labels = {"bare": "bare minio", "minio": "Storage, SIDECAR_S3_SMALL_OBJECTS=minio",
              "direct": "Storage, SIDECAR_S3_SMALL_OBJECTS=direct"}
    best = {labels[who]: {k: min(run[who][k] for run in runs) for k in runs[0][who]}
            for who in runs[0]}
    return {"objects": count, "object_bytes": size, "repeat": repeat, "best": best}


def _parallel(threads: int, total: int, op: Callable[[int], None]) -> tuple[float, float]:
    """Run op(0..total-1) on ``threads`` threads; (wall seconds, CPU seconds)."""
    counter = iter(range(total))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                op(i)
            except BaseException as err:  # reported after the run
                errors.append(err)
                return

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    c0, t0 = cpu(), time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall, used = time.perf_counter() - t0, cpu() - c0
    if errors:
        raise errors[0]
    return wall, used


def s3_limits(endpoint: str, access: str, secret: str, bucket: str, threads: int,
              count: int, size: int, floor_count: int) -> dict[str, Any]:
    keys = [f"raw/{i:06d}/file.bin" for i in range(count)]
    with _scratch(endpoint, access, secret, bucket, threads, size, keys) as (c, tmp, source):
        put_wall, put_cpu = _parallel(threads, count, lambda i: put_from_file(
            c, bucket, keys[i], source, 16 << 20))
        get_wall, get_cpu = _parallel(threads, count, lambda i: get_to_file(
            c, bucket, keys[i], os.path.join(tmp, "get", str(i % 64), "file.bin")))
        # The floor: one at a time, CPU per operation of the bare client, and of the
        # sidecar's own adapter (its S3 client as configured: direct unless told otherwise)
        n = min(floor_count, count)
        mode = os.environ.get("SIDECAR_S3_SMALL_OBJECTS") or "direct"
        floors = _floors(c, endpoint, access, secret, bucket, keys[:n], tmp, source, (mode,))
        bare, adapter = floors["bare"], floors[mode]
        c0 = cpu()
        for i in range(n):
            c.fget_object(bucket, keys[i], os.path.join(tmp, "fget", "file.bin"))
        floor_fget = (cpu() - c0) / n
        opened = CONNECTS[0]
    return {
        "threads": threads, "objects": count, "object_bytes": size,
        "put_per_s": count / put_wall, "get_per_s": count / get_wall,
        "put_cpu_ms": 1000 * put_cpu / count, "get_cpu_ms": 1000 * get_cpu / count,
        "floor_ops": n, "floor_get_cpu_ms": bare["get_cpu_ms"],
        "floor_put_cpu_ms": bare["put_cpu_ms"], "floor_fget_cpu_ms": 1000 * floor_fget,
        "floor_get_sys_cpu_ms": bare["get_sys_cpu_ms"],
        "floor_put_sys_cpu_ms": bare["put_sys_cpu_ms"],
        # the same floor named for what it is, and the sidecar's own path beside it
        **{f"floor_minio_{k}": v for k, v in bare.items()},
        "floor_sidecar_client": mode, **{f"floor_sidecar_{k}": v for k, v in adapter.items()},
        # TCP connections the client opened for all of the above (keep-alive: ~threads;
        # a server that closes every connection: about one per request)
        "connections_opened": opened,
    }


def s3_copy(endpoint: str, access: str, secret: str, bucket: str, key: str, part_size: int,
            workdir: str) -> dict[str, Any]:
    """Copy one big object the plain way: GET to a file, PUT it back under another key."""
    c = client(endpoint, access, secret, 1)
    dest = os.path.join(workdir, "plain-copy.bin")
    try:
        c0, t0 = cpu(), time.perf_counter()
        size = get_to_file(c, bucket, key, dest)
        get_wall, get_cpu = time.perf_counter() - t0, cpu() - c0
        c0, t0 = cpu(), time.perf_counter()
        put_from_file(c, bucket, key + ".plain-copy", dest, part_size)
        put_wall, put_cpu = time.perf_counter() - t0, cpu() - c0
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(dest)
        with contextlib.suppress(Exception):
            c.remove_object(bucket, key + ".plain-copy")
    mib = size / (1 << 20)
    return {"bytes": size, "part_size": part_size,
            "get_mib_s": mib / get_wall, "put_mib_s": mib / put_wall,
            "get_s": get_wall, "put_s": put_wall,
            "get_cpu_s": get_cpu, "put_cpu_s": put_cpu}


def _select_connection(url: str, on_open: Callable[[Any], None]) -> Any:
    import pika

    def failed(_conn: Any, err: BaseException) -> None:
        raise SystemExit(f"cannot connect to {url}: {err}")

    return pika.SelectConnection(pika.URLParameters(url), on_open_callback=on_open,
                                 on_open_error_callback=failed)


def amqp_consume(url: str, queue: str, count: int, prefetch: int) -> dict[str, Any]:
    """Consume ``count`` messages already in ``queue`` and ack each, as the sidecar does."""
    state = {"got": 0, "t0": 0.0, "c0": 0.0, "t1": 0.0, "c1": 0.0}

    def on_open(conn: Any) -> None:
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch: Any) -> None:
        def on_message(_ch: Any, method: Any, _props: Any, _body: bytes) -> None:
            if state["got"] == 0:
                state["t0"], state["c0"] = time.perf_counter(), cpu()
            state["got"] += 1
            ch.basic_ack(method.delivery_tag)
            if state["got"] == count:
                state["t1"], state["c1"] = time.perf_counter(), cpu()
                ch.connection.close()

        ch.basic_qos(prefetch_count=prefetch, callback=lambda _f: ch.basic_consume(
            queue, on_message, auto_ack=False))

    conn = _select_connection(url, on_open)
    conn.ioloop.call_later(120, conn.ioloop.stop)
    conn.add_on_close_callback(lambda *_: conn.ioloop.stop())
    conn.ioloop.start()
    n = state["got"] - 1  # timed from the first delivery to the last ack
    wall = state["t1"] - state["t0"]
    if state["got"] < count or wall <= 0:
        raise SystemExit(f"consumed {state['got']} of {count} messages")
    return {"messages": count, "prefetch": prefetch, "per_s": n / wall,
            "cpu_ms": 1000 * (state["c1"] - state["c0"]) / n}


def amqp_publish(url: str, queue: str, count: int, size: int) -> dict[str, Any]:
    """Publish ``count`` messages with confirms, all in flight at once (windowed)."""
    import pika
    from pika.spec import Basic

    body = b"x" * size
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    state = {"confirmed": 0, "nacked": 0, "t0": 0.0, "c0": 0.0, "t1": 0.0, "c1": 0.0}

    def on_open(conn: Any) -> None:
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch: Any) -> None:
        def on_confirm(frame: Any) -> None:
            method = frame.method
            n = method.delivery_tag - state["confirmed"] if method.multiple else 1
            state["confirmed"] += n
            if not isinstance(method, Basic.Ack):
                state["nacked"] += n
            if state["confirmed"] >= count:
                state["t1"], state["c1"] = time.perf_counter(), cpu()
                ch.connection.close()

        def start(_frame: Any) -> None:
            state["t0"], state["c0"] = time.perf_counter(), cpu()
            for _ in range(count):
                ch.basic_publish("", queue, body, props, mandatory=True)

        ch.confirm_delivery(on_confirm, callback=start)

    conn = _select_connection(url, on_open)
    conn.ioloop.call_later(120, conn.ioloop.stop)
    conn.add_on_close_callback(lambda *_: conn.ioloop.stop())
    conn.ioloop.start()
    wall = state["t1"] - state["t0"]
    if state["confirmed"] < count or wall <= 0:
        raise SystemExit(f"{state['confirmed']} of {count} publishes confirmed")
    return {"messages": count, "body_bytes": size, "per_s": count / wall,
            "cpu_ms": 1000 * (state["c1"] - state["c0"]) / count,
            "nacked": state["nacked"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.raw")
    sub = p.add_subparsers(dest="kind", required=True)
    s3 = sub.add_parser("s3")
    cp = sub.add_parser("s3-copy")
    fl = sub.add_parser("s3-floor")
    for q in (s3, cp, fl):
        q.add_argument("--endpoint", required=True)
        q.add_argument("--access", default="bench")
        q.add_argument("--secret", default="bench-secret")
        q.add_argument("--bucket", required=True)
    s3.add_argument("--threads", type=int, default=8)
    s3.add_argument("--count", type=int, default=400)
    s3.add_argument("--size", type=int, default=1024)
    s3.add_argument("--floor-count", type=int, default=200)
    fl.add_argument("--count", type=int, default=300)
    fl.add_argument("--size", type=int, default=1024)
    fl.add_argument("--repeat", type=int, default=5)
    fl.add_argument("--modes", default="minio,direct",
                    help="the sidecar adapter's SIDECAR_S3_SMALL_OBJECTS modes measured "
                    "beside bare minio (comma-separated; empty: bare minio only)")
    cp.add_argument("--key", required=True)
    cp.add_argument("--part-size", type=int, default=16 << 20)
    cp.add_argument("--workdir", default=tempfile.gettempdir())
    con = sub.add_parser("amqp-consume")
    pub = sub.add_parser("amqp-publish")
    for q in (con, pub):
        q.add_argument("--url", required=True)
        q.add_argument("--queue", required=True)
        q.add_argument("--count", type=int, default=5000)
    con.add_argument("--prefetch", type=int, default=16)
    pub.add_argument("--size", type=int, default=BODY_BYTES)
    a = p.parse_args(argv)
    if a.kind == "s3":
        out = s3_limits(a.endpoint, a.access, a.secret, a.bucket, a.threads, a.count, a.size,
                        a.floor_count)
    elif a.kind == "s3-floor":
        out = s3_floor(a.endpoint, a.access, a.secret, a.bucket, a.count, a.size, a.repeat,
                       tuple(m for m in a.modes.split(",") if m))
    elif a.kind == "s3-copy":
        out = s3_copy(a.endpoint, a.access, a.secret, a.bucket, a.key, a.part_size, a.workdir)
    elif a.kind == "amqp-consume":
        out = amqp_consume(a.url, a.queue, a.count, a.prefetch)
    else:
        out = amqp_publish(a.url, a.queue, a.count, a.size)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
