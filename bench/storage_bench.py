"""The storage adapter alone: peak memory of one large upload, and per-transfer overhead.

    python bench/storage_bench.py rss [--size-mib 512] [--part-mib 16]
    python bench/storage_bench.py overhead [--n 20000] [--repeat 5]

``rss`` starts ``bench.s3server`` (moto, in its own process so that the object it keeps is
not counted), then in a fresh child process builds a ``Storage`` and uploads one file of
``--size-mib`` through ``Storage.transfers.put``; it prints the child's VmHWM before and after.
``overhead`` times ``_download``/``_upload`` against a client that answers at once (no
I/O but the adapter's own), best of ``--repeat`` runs, in µs per transfer; run it with
``TMPDIR=/dev/shm`` to take the disk out of the download figure (it writes a file).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def settings(volume: str, url: str = "127.0.0.1:9", part_mib: int = 16) -> Any:
    return SimpleNamespace(
        data_volume_path=volume, storage_timeout=60, minio_url=url, storage_workers=1,
        minio_use_ssl=False, s3_ca_file="", minio_access_key="bench", minio_secret_key="bench",
        s3_region="us-east-1", part_size=part_mib << 20, storage_attempts=3,
        storage_backoff_max=1, minio_output_bucket="bench-out",
        s3_small_objects="minio")  # the fake client (overhead) is minio's


def hwm_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def rss_child(url: str, size_mib: int, part_mib: int) -> None:
    from sidecar.core.effects import UploadFile
    from sidecar.shell.io.storage import Storage
    with tempfile.TemporaryDirectory() as volume:
        source = os.path.join(volume, "big.bin")
        with open(source, "wb") as out:
            block = os.urandom(1 << 20)
            for _ in range(size_mib):
                out.write(block)
        del block
        events: list[Any] = []
        storage = Storage(settings(volume, url, part_mib), events.append)
        storage.transfers.ensure_output_bucket()
        before = hwm_kib()
        started, cpu = time.monotonic(), time.process_time()
        storage._upload(UploadFile(1, 0, "bench-out", "big.bin", source))
        took, cpu = time.monotonic() - started, time.process_time() - cpu
        after = hwm_kib()
        print(f"{events[-1]} in {took:.2f} s, CPU {cpu:.2f} s; VmHWM "
              f"{before / 1024:.1f} -> {after / 1024:.1f} MiB (+{(after - before) / 1024:.1f})")


def rss(size_mib: int, part_mib: int) -> None:
    server = subprocess.Popen([sys.executable, "-m", "bench.s3server", "--port", "0"],
                              stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        line = server.stdout.readline().split() if server.stdout else []
        port = line[-1]
        subprocess.run([sys.executable, __file__, "rss-child", f"127.0.0.1:{port}",
                        str(size_mib), str(part_mib)], check=True)
    finally:
        server.terminate()
        server.wait(10)


class _Fast:
    """A minio client that answers at once."""

    class _Response:
        headers = {"ETag": '"e"'}

        def stream(self, _n: int) -> Any:
            yield b"x"

        def close(self) -> None:
            pass

        def release_conn(self) -> None:
            pass

    def get_object(self, bucket: str, key: str) -> Any:
        return self._Response()

    def put_object(self, *a: Any, **kw: Any) -> Any:
        return SimpleNamespace(etag='"e"')

    def bucket_exists(self, bucket: str) -> bool:
        return True


def overhead(n: int, repeat: int) -> None:
    from sidecar.core.effects import DownloadFile, UploadFile
    from sidecar.shell.io.storage import Storage
    with tempfile.TemporaryDirectory() as volume:
        storage = Storage(settings(volume), lambda e: None)
        storage.transfers.client = _Fast()  # type: ignore[assignment]
        source = os.path.join(volume, "out", "f.txt")
        os.makedirs(os.path.dirname(source))
        with open(source, "wb") as out:
            out.write(b"x")
        downloads = [DownloadFile(i, 0, "b", "k", os.path.join(volume, "in", f"{i % 16}",
                                                                     "f.txt"))
                     for i in range(n)]
        uploads = [UploadFile(i, 0, "b", "k", source) for i in range(n)]
        for name, fn, effects in (("download", storage._download, downloads),
                                  ("upload", storage._upload, uploads)):
            best = float("inf")
            for _ in range(repeat):
                started = time.perf_counter()
                for e in effects:
                    fn(e)
                best = min(best, time.perf_counter() - started)
            print(f"{name}: {best / n * 1e6:.1f} µs per transfer (best of {repeat}, n={n})")


def main() -> None:
    if sys.argv[1:2] == ["rss-child"]:
        rss_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("rss", "overhead"))
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--part-mib", type=int, default=16)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.what == "rss":
        rss(args.size_mib, args.part_mib)
    else:
        overhead(args.n, args.repeat)


if __name__ == "__main__":
    main()
