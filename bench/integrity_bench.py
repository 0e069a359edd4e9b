"""The CPU the end-to-end integrity check costs (sidecar/shell/io/integrity.py), per fragment.

    python -m bench.integrity_bench [--small 300] [--rounds 5] [--large-mib 512] [--large-rounds 2]

One fragment here is what a 1→1 step moves: one GET of the input file to the volume and one
PUT of a file of the same size, through the sidecar's own ``Storage`` (``_download`` and
``_upload``, the direct path, the default settings) on ``bench.s3server`` (moto behind
granian, in a process of its own so its CPU is not counted). The CPU is this process's
(user+sys, all threads), ÷ fragments. Each size runs with the check and without it (the
integrity module's hashing replaced by no-ops: the code as it was before), alternating
round by round in the same run so that load drifts hit both alike; the median round is
reported with the load average before and after.

Sizes: 1 KiB (a plain ETag: SHA-256 and MD5 of the GET, SHA-256 of the PUT, which the
direct path's SigV4 payload hash reuses), and ``--large-mib`` (512) twice: a GET of an object
stored in one PUT (plain ETag: SHA-256 + MD5) and a GET of one stored in parts (``-N`` ETag:
SHA-256 only), each with the PUT of the file (multipart: its whole-file SHA-256 is taken in
the pass that hashes each part for its request).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.raw import client, sidecar_storage
from bench.s3server import BENCH_AGENT
from sidecar.core.effects import DownloadFile, UploadFile
from sidecar.core.events import FileDownloaded, FileUploaded
from sidecar.shell.io import integrity

BUCKET = "integrity-bench"
ACCESS = SECRET = "bench-key"


class _NoCheck(integrity.DownloadCheck):
    """The download loop as it was: write and count, nothing hashed or checked."""

    def copy(self, response: Any, out: Any, chunk: int) -> str:
        for data in response.stream(chunk):
            out.write(data)
            self.size += len(data)
        return ""


class _NoHash(integrity.HashingReader):
    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def hexdigest(self) -> str:
        return ""  # s3direct hashes the payload itself, as before


class _NoRunning(integrity.RunningSha256):
    def attempt(self) -> Any:
        return None

    def commit(self, state: Any) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


@contextlib.contextmanager
def checking(on: bool) -> Iterator[None]:
    if on:
        yield
        return
    saved = integrity.DownloadCheck, integrity.HashingReader, integrity.RunningSha256
    integrity.DownloadCheck, integrity.HashingReader, integrity.RunningSha256 = (
        _NoCheck, _NoHash, _NoRunning)
    try:
        yield
    finally:
        integrity.DownloadCheck, integrity.HashingReader, integrity.RunningSha256 = saved


def start_server() -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "bench.s3server", "--server", "granian",
                               "--port", "0"], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = server.stdout.readline().split() if server.stdout else []
    if not line or line[0] != "READY":
        server.kill()
        raise SystemExit("bench.s3server did not start")
    return server, f"127.0.0.1:{line[-1]}"


def fragments(storage: Any, keys: list[str], volume: str, source: str) -> list[Any]:
    """One GET and one PUT (of ``source``) per key, through the adapter; its events."""
    events: list[Any] = []
    storage.post = events.append
    for i, key in enumerate(keys):
        dest = os.path.join(volume, "in", f"{i % 16}.bin")
        storage._download(DownloadFile(i, 0, BUCKET, key, dest))
        storage._upload(UploadFile(i, 0, BUCKET, f"out/{i % 16}", source))
    bad = [e for e in events if not isinstance(e, FileDownloaded | FileUploaded)]
    if bad:
        raise SystemExit(f"a transfer failed: {bad[0]}")
    return events


def measure(run: Callable[[], list[Any]], on: bool, count: int) -> float:
    """CPU ms per fragment of one round."""
    with checking(on):
        cpu = time.process_time()
        events = run()
        cpu = time.process_time() - cpu
    hashed = [e.sha256 for e in events]
    assert all(hashed) if on else not any(hashed), "the check was not on/off as asked"
    return cpu * 1000 / count


def rounds(label: str, run: Callable[[], list[Any]], count: int, n: int) -> dict[str, Any]:
    results: dict[bool, list[float]] = {True: [], False: []}
    for r in range(n):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            results[on].append(measure(run, on, count))
    on, off = statistics.median(results[True]), statistics.median(results[False])
    row = {"case": label, "with_ms": on, "without_ms": off, "ratio": on / off,
           "rounds": n, "with_all": results[True], "without_all": results[False]}
    print(f"{label:<34} with {on:10.2f} ms  without {off:10.2f} ms  ratio {on / off:5.2f}"
          f"  ({n} rounds; with {_fmt(results[True])}, without {_fmt(results[False])})",
          flush=True)
    return row


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def hash_rates(mib: int = 64) -> str:
    """CPU MiB/s of each hash alone, in memory: what the check's added CPU should be."""
    block = os.urandom(1 << 20)
    rates = []
    for name in ("sha256", "md5"):
        h = hashlib.new(name, usedforsecurity=False)
        cpu = time.process_time()
        for _ in range(mib):
            h.update(block)
        rates.append(f"{name} {mib / (time.process_time() - cpu):.0f} MiB/s")
    return ", ".join(rates)


class _Instant:
    """A minio client that answers at once with a 1 KiB object (a plain ETag, its length):
    the adapter's own CPU per transfer, without HTTP, for ``--overhead``."""

    def __init__(self, body: bytes):
        self.body = body
        self.headers = {"ETag": f'"{hashlib.md5(body).hexdigest()}"',
                        "Content-Length": str(len(body))}

    def get_object(self, bucket: str, key: str) -> Any:
        return self

    def stream(self, size: int) -> Iterator[bytes]:
        yield self.body

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass

    def put_object(self, bucket: str, key: str, data: Any, length: int, **kw: Any) -> Any:
        data.read(length)
        return self

    etag = '"e"'

    def bucket_exists(self, bucket: str) -> bool:
        return True


def overhead(n: int, repeat: int) -> None:
    """µs of adapter CPU per 1 KiB fragment (GET + PUT), with and without the check."""
    with tempfile.TemporaryDirectory() as volume:
        storage = sidecar_storage("127.0.0.1:9", ACCESS, SECRET, volume, "minio")
        body = os.urandom(1024)
        storage.transfers.client = _Instant(body)
        storage.transfers.bucket_ready = True
        source = write(os.path.join(volume, "out", "small.bin"), body)
        keys = [f"k{i}" for i in range(n)]
        best = {}
        for on in (True, False) * repeat:
            per = measure(lambda: fragments(storage, keys, volume, source), on, n) * 1000
            best[on] = min(best.get(on, per), per)
    print(f"1 KiB, no HTTP (best of {repeat}): with {best[True]:.1f} µs, without "
          f"{best[False]:.1f} µs per fragment: the check costs {best[True] - best[False]:.1f} "
          "µs", flush=True)


def write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    return path


def put_objects(endpoint: str, keys: list[str], data: bytes, part_size: int) -> None:
    c = client(endpoint, ACCESS, SECRET, 2, BENCH_AGENT)
    for key in keys:
        c.put_object(BUCKET, key, io.BytesIO(data), len(data), part_size=part_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=300, help="1 KiB fragments per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--large-mib", type=int, default=512)
    parser.add_argument("--large-rounds", type=int, default=2)
    parser.add_argument("--overhead", type=int, default=0, metavar="N",
                        help="only the adapter's CPU, no S3: N 1 KiB fragments, best of 5")
    args = parser.parse_args(argv)
    if args.overhead:
        overhead(args.overhead, 5)
        return
    server, endpoint = start_server()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at the start; "
          f"{os.cpu_count()} CPUs", flush=True)
    try:
        client(endpoint, ACCESS, SECRET, 2, BENCH_AGENT).make_bucket(BUCKET)
        with tempfile.TemporaryDirectory() as volume:
            storage = sidecar_storage(endpoint, ACCESS, SECRET, volume, "direct")
            storage.transfers.output_bucket = BUCKET
            small = [f"small/{i}" for i in range(args.small)]
            kib = os.urandom(1024)
            put_objects(endpoint, small, kib, 5 << 20)
            source = write(os.path.join(volume, "out", "small.bin"), kib)
            rows = [rounds("1 KiB (plain ETag)",
                           lambda: fragments(storage, small, volume, source),
                           len(small), args.rounds)]
            if args.large_mib:
                size = args.large_mib << 20
                data = os.urandom(size)
                put_objects(endpoint, ["large/plain"], data, size)  # one PUT: a plain ETag
                put_objects(endpoint, ["large/parts"], data, 16 << 20)  # "-32"
                source = write(os.path.join(volume, "out", "large.bin"), data)
                del data
                for key, what in (("large/plain", "plain ETag: MD5 checked"),
                                  ("large/parts", "multipart ETag: no MD5")):
                    rows.append(rounds(f"{args.large_mib} MiB ({what})",
                                       lambda k=key: fragments(storage, [k], volume,
                                                               source),
                                       1, args.large_rounds))
    finally:
        server.terminate()
        server.wait(10)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at the end; "
          f"hashing alone (CPU): {hash_rates()}", flush=True)
    print("\n| fragment (1 GET + 1 PUT) | CPU with the check | without | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['with_ms']:.2f} ms | {row['without_ms']:.2f} ms "
              f"| {row['ratio']:.2f} |")


if __name__ == "__main__":
    main()
